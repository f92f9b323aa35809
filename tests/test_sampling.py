"""Stratified training subsamples: shares per label, seeded, every kind."""

from __future__ import annotations

from collections import Counter

import pytest

from bitpatch.trainer.data import DataError, Example
from bitpatch.trainer.sampling import subsample


def labelled(counts: dict[str, int]) -> list[Example]:
    rows, line = [], 0
    for label, n in counts.items():
        for _ in range(n):
            line += 1
            rows.append(Example(f"text {line}", None, label, line))
    return rows


def test_every_label_keeps_its_share():
    rows = labelled({"a": 700, "b": 200, "c": 100})
    kept = subsample(rows, 0.1, seed=0, kind="classification")
    assert Counter(ex.label for ex in kept) == {"a": 70, "b": 20, "c": 10}
    assert len({ex.line for ex in kept}) == 100  # no example twice


def test_a_rare_label_keeps_one_example():
    kept = subsample(labelled({"a": 500, "rare": 3}), 0.1, seed=0, kind="classification")
    assert Counter(ex.label for ex in kept)["rare"] == 1


def test_seeded_same_seed_same_rows_other_seed_other_rows():
    rows = labelled({"a": 300, "b": 300})
    first = [ex.line for ex in subsample(rows, 0.3, seed=1, kind="classification")]
    again = [ex.line for ex in subsample(rows, 0.3, seed=1, kind="classification")]
    other = [ex.line for ex in subsample(rows, 0.3, seed=2, kind="classification")]
    assert first == again and set(first) != set(other)


def test_regression_keeps_every_score_quintile():
    rows = [Example(f"t{i}", "p", i / 100 * 5, i) for i in range(1000)]  # scores 0 .. 49.95
    kept = subsample(rows, 0.1, seed=0, kind="regression")
    assert len(kept) == 100
    quintiles = Counter(min(int(ex.label / 10), 4) for ex in kept)
    assert quintiles == {q: 20 for q in range(5)}


def test_multi_label_and_token_tasks_subsample():
    tagged = [Example("a b", None, ("O", "O"), i, ("a", "b")) for i in range(50)]
    assert len(subsample(tagged, 0.3, seed=0, kind="token_classification")) == 15
    multi = [Example("x", None, ("p", "q") if i % 2 else ("p",), i) for i in range(40)]
    kept = subsample(multi, 0.5, seed=0, kind="multi_label")
    assert Counter(ex.label for ex in kept) == {("p", "q"): 10, ("p",): 10}


def test_whole_set_is_returned_as_is():
    rows = labelled({"a": 5})
    assert subsample(rows, 1.0, seed=0, kind="classification") is rows


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fractions_outside_zero_one_are_refused(fraction):
    with pytest.raises(DataError, match=r"--train-fraction must be in \(0, 1\]"):
        subsample(labelled({"a": 5}), fraction, seed=0, kind="classification")
