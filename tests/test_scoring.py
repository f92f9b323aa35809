"""Scoring per task kind: shadow agreement and labelled metrics."""

from __future__ import annotations

from collections import Counter

import pytest

from bitpatch.server.core.scoring import scorer_of
from bitpatch.server.errors import InvalidRequest


def total(scorer, pairs, method: str) -> Counter:
    counts = Counter()
    for a, b in pairs:
        counts.update(
            getattr(scorer, method)(a, b) if method == "compare" else scorer.score(a, b, "x")
        )
    return counts


def test_classification_agreement_difference_and_accuracy():
    scorer = scorer_of("classification")
    a = {"label": "pos", "scores": {"pos": 0.9, "neg": 0.1}}
    b = {"label": "neg", "scores": {"pos": 0.4, "neg": 0.6}}
    counts = total(scorer, [(a, a), (a, b)], "compare")
    assert counts["agree"] / counts["units"] == 0.5
    assert counts["difference"] / counts["compared"] == pytest.approx(0.25)
    assert scorer.value(total(scorer, [(a, "pos"), (b, "pos")], "score")) == 50.0
    with pytest.raises(InvalidRequest, match="labels"):
        scorer.check_label(("pos", "neg"), "maybe", "labels[0]")


def test_regression_is_scored_by_absolute_error():
    scorer = scorer_of("regression")
    assert (
        scorer.value(total(scorer, [({"value": 2.0}, 3.0), ({"value": 1.0}, 0.0)], "score")) == 1.0
    )
    assert scorer.compare({"value": 1.0}, {"value": 1.5})["difference"] == 0.5
    assert not scorer.higher_is_better


def test_multi_label_micro_f1_and_jaccard():
    scorer = scorer_of("multi_label")
    prediction = {"labels": ["a", "b"], "scores": {"a": 0.9, "b": 0.8, "c": 0.1}}
    counts = scorer.score(prediction, scorer.check_label(("a", "b", "c"), ["a", "c"], "x"), "x")
    assert scorer.value(counts) == pytest.approx(100 * 2 / 4)  # tp 1, fp 1, fn 1
    other = {"labels": ["a"], "scores": {"a": 0.9, "b": 0.2, "c": 0.1}}
    assert scorer.compare(prediction, other)["agree"] == 0.5


def test_token_word_accuracy_needs_a_tag_per_word():
    scorer = scorer_of("token_classification")
    prediction = {"tokens": [{"text": "Ann", "label": "B-PER"}, {"text": "ran", "label": "O"}]}
    assert scorer.value(scorer.score(prediction, ["B-PER", "B-PER"], "x")) == 50.0
    with pytest.raises(InvalidRequest, match="one tag per word"):
        scorer.score(prediction, ["O"], "labels[0]")


def test_embeddings_agree_by_cosine_and_have_no_labels():
    scorer = scorer_of("embedding")
    assert scorer.compare({"embedding": [1.0, 0.0]}, {"embedding": [1.0, 1.0]})["agree"] == (
        pytest.approx(2**-0.5)
    )
    with pytest.raises(InvalidRequest, match="no labels"):
        scorer.check_label((), "x", "labels[0]")
