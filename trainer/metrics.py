"""Task metrics as the BitFit paper reports them (Table 5), in percent, from scikit-learn/scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# task -> the metric that picks the best checkpoint
MAIN_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "spearman"}


def main_metric(task: str, kind: str) -> str:
    """The headline metric of a task (accuracy or spearman for user data)."""
    return MAIN_METRIC.get(task, "spearman" if kind == "regression" else "accuracy")


def classification_metrics(task: str, predicted: list[int], gold: list[int]) -> dict[str, float]:
    """Accuracy always; MCC for CoLA; F1 of label 1 for MRPC/QQP; macro F1 for user tasks."""
    out = {"accuracy": 100 * accuracy_score(gold, predicted)}
    if task == "cola":
        out["mcc"] = 100 * matthews_corrcoef(gold, predicted)
    elif task in ("mrpc", "qqp"):
        out["f1"] = 100 * f1_score(gold, predicted, pos_label=1, zero_division=0)
    elif task not in ("sst2", "rte", "qnli", "mnli", "wnli"):
        out["macro_f1"] = 100 * f1_score(gold, predicted, average="macro", zero_division=0)
    return out


def regression_metrics(predicted, gold) -> dict[str, float]:
    """Spearman and Pearson correlation."""
    predicted, gold = np.asarray(predicted, float), np.asarray(gold, float)
    if np.std(predicted) == 0:
        return {"spearman": 0.0, "pearson": 0.0}
    return {
        "spearman": 100 * float(spearmanr(predicted, gold).statistic),
        "pearson": 100 * float(pearsonr(predicted, gold).statistic),
    }


def score(task: str, kind: str, logits: np.ndarray, gold) -> dict[str, float]:
    """Metrics from (N, n) logits and gold label ids (or floats for regression)."""
    if kind == "regression":
        return regression_metrics(logits[:, 0], gold)
    return classification_metrics(task, logits.argmax(-1).tolist(), list(gold))
