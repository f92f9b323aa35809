"""Task metrics as the BitFit paper reports them (Table 5), in percent, from scikit-learn/scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# task -> the metric that picks the best checkpoint
MAIN_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "spearman"}


THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # searched on dev for multi_label


def has_bio_tags(labels) -> bool:
    """Whether a tag set uses a B-/I- scheme (entities can be read off it)."""
    return any(label[:2] in ("B-", "I-") for label in labels)


def tagging_metrics(predicted: list[list[str]], gold: list[list[str]], bio: bool) -> dict:
    """Word-level accuracy, and entity-level micro F1 (conlleval's rule) for B-/I- tag sets."""
    pairs = [
        (p, g) for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)
    ]
    out = {"accuracy": 100 * sum(p == g for p, g in pairs) / max(1, len(pairs))}
    if bio:
        out["entity_f1"] = entity_f1(predicted, gold)
    return out


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of each entity: it starts at B-X, or at an I-X that does
    not continue an X, and extends over the following I-X (what the server's entities are)."""
    spans: list[list] = []
    for i, tag in enumerate(tags):
        prefix, kind = tag[:2], tag[2:]
        if prefix == "I-" and spans and spans[-1][0] == kind and spans[-1][2] == i - 1:
            spans[-1][2] = i
        elif prefix in ("B-", "I-"):
            spans.append([kind, i, i])
    return {tuple(s) for s in spans}


def entity_f1(predicted: list[list[str]], gold: list[list[str]]) -> float:
    """Micro F1 (x100) of exactly matching entities over all sentences."""
    found = correct = wanted = 0
    for ps, gs in zip(predicted, gold, strict=True):
        p, g = entity_spans(ps), entity_spans(gs)
        found, wanted, correct = found + len(p), wanted + len(g), correct + len(p & g)
    if not correct:
        return 0.0
    precision, recall = correct / found, correct / wanted
    return 100 * 2 * precision * recall / (precision + recall)


def token_metrics(logits: np.ndarray, label_ids: np.ndarray, labels: list[str]) -> dict:
    """tagging_metrics from (N, T, n) logits and (N, T) gold tag ids (-100: not a word start)."""
    predicted, gold = [], []
    for row_logits, row_gold in zip(logits, label_ids, strict=True):
        keep = row_gold != -100
        predicted.append([labels[i] for i in row_logits[keep].argmax(-1)])
        gold.append([labels[i] for i in row_gold[keep]])
    return tagging_metrics(predicted, gold, has_bio_tags(labels))


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


def multi_label_metrics(logits: np.ndarray, gold, thresholds=None) -> dict[str, float]:
    """Micro and macro F1 of sigmoid(logits) >= thresholds (one per label); without
    thresholds, the single threshold with the best micro F1 is chosen and reported."""
    scores = 1 / (1 + np.exp(-np.asarray(logits, float)))  # (N, n)
    gold = np.asarray(gold, int)  # (N, n) multi-hot
    if thresholds is not None:
        return _f1s(gold, scores >= np.asarray(thresholds))
    best = max(THRESHOLDS, key=lambda t: (_f1s(gold, scores >= t)["micro_f1"], -abs(t - 0.5)))
    return {**_f1s(gold, scores >= best), "threshold": float(best)}


def _f1s(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "micro_f1": 100 * f1_score(gold, predicted, average="micro", zero_division=0),
        "macro_f1": 100 * f1_score(gold, predicted, average="macro", zero_division=0),
    }


def embedding_metrics(cosine, best_other, gold) -> dict[str, float]:
    """Spearman of the pairs' cosine against their scores; without scores (negative gold),
    how often a text's pair is nearer than every other candidate."""
    gold = np.asarray(gold, float)
    if (gold < 0).any():
        return {"retrieval_accuracy": 100 * float(np.mean(np.asarray(cosine) > best_other))}
    return {"spearman": regression_metrics(cosine, gold)["spearman"]}
