"""Seeded, stratified subsamples of a training set (`bitpatch train --train-fraction`)."""

from __future__ import annotations

import random
from collections import defaultdict

from .data import Example
from .errors import DataError

REGRESSION_BINS = 5  # a regression label's stratum: its quantile bin among the training labels


def subsample(examples: list[Example], fraction: float, seed: int, kind: str) -> list[Example]:
    """`fraction` of the examples, the same share of every label (or score quintile), seeded."""
    if not 0 < fraction <= 1:
        raise DataError(f"--train-fraction must be in (0, 1], got {fraction}; e.g. 0.1 for 10%")
    if fraction == 1:
        return examples
    rng = random.Random(seed)
    kept: list[Example] = []
    for stratum in _strata(examples, kind):
        rng.shuffle(stratum)
        kept.extend(stratum[: max(1, round(len(stratum) * fraction))])
    rng.shuffle(kept)
    return kept


def _strata(examples: list[Example], kind: str) -> list[list[Example]]:
    """Examples grouped by label, in a fixed order (token tasks: one group)."""
    keys = _keys(examples, kind)
    groups: dict[object, list[Example]] = defaultdict(list)
    for key, example in zip(keys, examples, strict=True):
        groups[key].append(example)
    return [groups[key] for key in sorted(groups, key=repr)]


def _keys(examples: list[Example], kind: str) -> list[object]:
    """Each example's stratum key."""
    if kind == "token_classification":
        return [None] * len(examples)
    if kind == "regression":
        ranked = sorted(float(ex.label) for ex in examples)
        edges = [ranked[len(ranked) * i // REGRESSION_BINS] for i in range(1, REGRESSION_BINS)]
        return [sum(float(ex.label) >= edge for edge in edges) for ex in examples]
    return [ex.label for ex in examples]
