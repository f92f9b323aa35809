"""How predictions are scored, per task kind: a shadow row against the row that served the
request (agreement, and the mean difference of scores or values), and a prediction against
its label (accuracy, micro F1, mean absolute error, word accuracy)."""

from __future__ import annotations

import math
from collections import Counter

from ..errors import InvalidRequest


class Scorer:
    """Classification: the label, its agreement, and accuracy against label names."""

    metric: str | None = "accuracy"
    higher_is_better = True
    agrees = True  # shadow rows have an agreement percent (regression: a difference only)

    def check_label(self, labels: tuple[str, ...], label: object, where: str) -> object:
        """The label as the kind takes it, or InvalidRequest saying what to send."""
        if not isinstance(label, str) or label not in labels:
            raise InvalidRequest(f"{where} must be one of the task's labels {list(labels)}")
        return label

    def score(self, prediction: dict, label: object, where: str) -> Counter:
        """One row's counts toward the metric."""
        return Counter(correct=int(prediction["label"] == label), rows=1)

    def value(self, counts: Counter) -> float | None:
        """The metric of summed counts (None: no rows yet)."""
        return 100.0 * counts["correct"] / counts["rows"] if counts["rows"] else None

    def compare(self, served: dict, shadow: dict) -> Counter:
        """One row's agreement counts: agree / units, and difference / compared."""
        return Counter(
            agree=int(served["label"] == shadow["label"]),
            units=1,
            difference=mean_difference(served["scores"], shadow["scores"]),
            compared=1,
        )


class RegressionScorer(Scorer):
    """Regression: mean absolute error against numbers; shadows by the mean |difference|."""

    metric = "mean_absolute_error"
    higher_is_better = False
    agrees = False

    def check_label(self, labels, label, where):
        if isinstance(label, bool) or not isinstance(label, int | float) or math.isnan(label):
            raise InvalidRequest(f"{where} must be a number (the task is a regression)")
        return float(label)

    def score(self, prediction, label, where):
        return Counter(error=abs(prediction["value"] - label), rows=1)

    def value(self, counts):
        return counts["error"] / counts["rows"] if counts["rows"] else None

    def compare(self, served, shadow):
        return Counter(difference=abs(served["value"] - shadow["value"]), compared=1)


class MultiLabelScorer(Scorer):
    """multi_label: micro F1 against label lists; shadows by the Jaccard index of label sets."""

    metric = "micro_f1"

    def check_label(self, labels, label, where):
        if not isinstance(label, list) or not all(x in labels for x in label):
            raise InvalidRequest(f"{where} must be a list of the task's labels {list(labels)}")
        return set(label)

    def score(self, prediction, label, where):
        chosen = set(prediction["labels"])
        return Counter(tp=len(chosen & label), fp=len(chosen - label), fn=len(label - chosen))

    def value(self, counts):
        total = 2 * counts["tp"] + counts["fp"] + counts["fn"]
        return 100.0 * 2 * counts["tp"] / total if total else None

    def compare(self, served, shadow):
        a, b = set(served["labels"]), set(shadow["labels"])
        jaccard = len(a & b) / len(a | b) if a | b else 1.0
        return Counter(
            agree=jaccard,
            units=1,
            difference=mean_difference(served["scores"], shadow["scores"]),
            compared=1,
        )


class TokenScorer(Scorer):
    """token_classification: word accuracy against a tag per word; shadows by tag agreement
    per word."""

    metric = "word_accuracy"

    def check_label(self, labels, label, where):
        if not isinstance(label, list) or not all(x in labels for x in label):
            raise InvalidRequest(
                f"{where} must be a list with one of the task's tags {list(labels)} per word"
            )
        return label

    def score(self, prediction, label, where):
        tags = [token["label"] for token in prediction["tokens"]]
        if len(tags) != len(label):
            raise InvalidRequest(
                f"{where} has {len(label)} tags, but the task reads {len(tags)} words in that "
                f"input ({[t['text'] for t in prediction['tokens']]}); send one tag per word"
            )
        return Counter(correct=sum(map(str.__eq__, tags, label)), rows=len(tags))

    def compare(self, served, shadow):
        a = [t["label"] for t in served["tokens"]]
        b = [t["label"] for t in shadow["tokens"]]
        return Counter(agree=sum(map(str.__eq__, a, b)), units=max(len(a), len(b)))


class EmbeddingScorer(Scorer):
    """embedding: no labels; shadows by the cosine of the two embeddings."""

    metric = None

    def check_label(self, labels, label, where):
        raise InvalidRequest(
            "embedding tasks have no labels to evaluate against; compare versions with a "
            "shadow instead (PUT /tasks/{task}/rollout with a shadow)"
        )

    def value(self, counts):
        return None

    def compare(self, served, shadow):
        return Counter(agree=cosine(served["embedding"], shadow["embedding"]), units=1)


SCORERS: dict[str, Scorer] = {
    "classification": Scorer(),
    "regression": RegressionScorer(),
    "multi_label": MultiLabelScorer(),
    "token_classification": TokenScorer(),
    "embedding": EmbeddingScorer(),
}


def scorer_of(kind: object) -> Scorer:
    """The scorer of a task kind (a TaskKind or its name)."""
    return SCORERS[str(kind)]


def mean_difference(a: dict[str, float], b: dict[str, float]) -> float:
    """Mean |a - b| over the labels' scores."""
    return sum(abs(a[k] - b[k]) for k in a) / len(a) if a else 0.0


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors (0 when one is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
