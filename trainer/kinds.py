"""What training does per task kind: how labels are read and named, the loss, the dev scores
and the headline metric. One object per kind (the shared facts, such as whether a kind reads
every token, come from patches/kinds.py), so the trainer asks the kind instead of comparing
names."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..patches.kinds import KINDS, TaskKind
from .errors import DataError
from .metrics import (
    MAIN_METRIC,
    classification_metrics,
    embedding_metrics,
    has_bio_tags,
    multi_label_metrics,
    regression_metrics,
    token_metrics,
)


def is_number(value) -> bool:
    """Whether `value` reads as a float."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class TrainingKind:
    """Single-label classification; the other kinds override what differs."""

    pairwise = False  # trains a pair model on (text, text) pairs instead of a head

    def __init__(self, shared: TaskKind):
        self.shared = shared
        self.name = shared.name

    def __str__(self) -> str:
        return self.name

    @property
    def per_token(self) -> bool:
        """Every token gets an output (the rows are words, pooling 'none')."""
        return self.shared.per_token

    def label_of(self, label, path, line: int, sep: str):
        """A data file's label as this kind reads it (a string here)."""
        return str(int(label)) if isinstance(label, (int, float)) else str(label)

    def label_names(
        self, train: list, label_columns: tuple[str, ...] = (), declared: tuple[str, ...] = ()
    ) -> list[str]:
        """The label set in head-row order: the dataset's declared names, else sorted."""
        return list(declared) or sorted({e.label for e in train})

    def check_dev(self, dev: list, labels: list[str], path) -> None:
        """Every dev label must occur in train."""
        for e in dev:
            if e.label not in labels:
                raise DataError(
                    f"{path}:{e.line}: label {e.label!r} does not occur in the training "
                    f"data (labels seen: {labels})"
                )

    def outputs(self, labels: list[str]) -> int:
        """Rows of the head."""
        return len(labels)

    def row_label(self, example, index: dict[str, int]):
        """An example's training target: the label's id (`index`: label -> id, head order)."""
        return index[example.label]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (B, n), labels (B,) ids: cross-entropy."""
        return nn.functional.cross_entropy(logits.float(), labels)

    def gold(self, labels: list[str], dev: list) -> list:
        """Dev labels as the patch's label ids."""
        index = {label: i for i, label in enumerate(labels)}
        missing = sorted({e.label for e in dev} - index.keys())
        if missing:
            raise ValueError(f"dev labels {missing} are not among the patch's labels {labels}")
        return [index[e.label] for e in dev]

    def score(self, task: str, logits: np.ndarray, gold, thresholds=None, labels=()) -> dict:
        """Dev metrics from (N, n) logits."""
        return classification_metrics(task, logits.argmax(-1).tolist(), list(gold))

    def main_metric(self, task: str, labels: list[str], scored: bool) -> str:
        """The headline metric of a task of this kind."""
        return MAIN_METRIC.get(task, "accuracy")


class Regression(TrainingKind):
    def label_of(self, label, path, line, sep):
        if not is_number(label):
            raise DataError(f"{path}:{line}: expected a numeric label, got {label!r}")
        return float(label)

    def label_names(self, train, label_columns=(), declared=()):
        return []

    def check_dev(self, dev, labels, path):
        return None

    def outputs(self, labels):
        return 1

    def row_label(self, example, index):
        return float(example.label)

    def loss(self, logits, labels):
        return nn.functional.mse_loss(logits[:, 0].float(), labels.float())

    def gold(self, labels, dev):
        return [float(e.label) for e in dev]

    def score(self, task, logits, gold, thresholds=None, labels=()):
        return regression_metrics(logits[:, 0], gold)

    def main_metric(self, task, labels, scored):
        return MAIN_METRIC.get(task, "spearman")


class MultiLabel(TrainingKind):
    def label_of(self, label, path, line, sep):
        names = label if isinstance(label, (tuple, list)) else str(label).split(sep)
        return tuple(dict.fromkeys(n.strip() for n in names if n.strip()))

    def label_names(self, train, label_columns=(), declared=()):
        return list(label_columns) or sorted({n for e in train for n in e.label})

    def check_dev(self, dev, labels, path):
        unknown = sorted({n for e in dev for n in e.label} - set(labels))
        if unknown:
            raise DataError(f"{path}: dev labels {unknown} never occur in the training data")

    def row_label(self, example, index):
        return [float(label in example.label) for label in index]

    def loss(self, logits, labels):  # labels: (B, n) multi-hot
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def gold(self, labels, dev):
        unknown = sorted({n for e in dev for n in e.label} - set(labels))
        if unknown:
            raise ValueError(f"dev labels {unknown} are not among the patch's labels {labels}")
        return [[int(label in e.label) for label in labels] for e in dev]

    def score(self, task, logits, gold, thresholds=None, labels=()):
        return multi_label_metrics(logits, gold, thresholds)

    def main_metric(self, task, labels, scored):
        return MAIN_METRIC.get(task, "micro_f1")


class TokenClassification(TrainingKind):
    def loss(self, logits, labels):  # logits (B, T, n); labels (B, T), -100 off word starts
        return nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100
        )

    def score(self, task, logits, gold, thresholds=None, labels=()):
        return token_metrics(logits, np.asarray(gold), list(labels))

    def main_metric(self, task, labels, scored):
        return "entity_f1" if has_bio_tags(labels) else "accuracy"


class Embedding(TrainingKind):
    pairwise = True

    def outputs(self, labels):
        return 0

    def score(self, task, logits, gold, thresholds=None, labels=()):
        # logits: (N, 2) the pair's cosine, the best cosine to another pair
        return embedding_metrics(logits[:, 0], logits[:, 1], gold)

    def main_metric(self, task, labels, scored):
        return "spearman" if scored else "retrieval_accuracy"


TRAINING_KINDS: dict[str, TrainingKind] = {
    "classification": TrainingKind(KINDS["classification"]),
    "regression": Regression(KINDS["regression"]),
    "multi_label": MultiLabel(KINDS["multi_label"]),
    "token_classification": TokenClassification(KINDS["token_classification"]),
    "embedding": Embedding(KINDS["embedding"]),
}


def training_kind(name: str) -> TrainingKind:
    """The training side of a kind named in data or patch metadata."""
    try:
        return TRAINING_KINDS[name]
    except KeyError:
        raise DataError(f"unknown task kind {name!r}; one of {sorted(TRAINING_KINDS)}") from None
