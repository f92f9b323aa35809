"""Turning a row's head outputs into the prediction a client receives, for every task kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .encoding import EncodedRow
    from .engine import TaskHead


def to_prediction(head: TaskHead, logits: torch.Tensor, row: EncodedRow | None = None) -> dict:
    """The prediction of one row (`row`: its encoding, needed by token tasks)."""
    return to_predictions(head, logits[None], [row])[0]


def to_predictions(
    head: TaskHead, logits: torch.Tensor, rows: list[EncodedRow | None] | None = None
) -> list[dict]:
    """`to_prediction` of each row of one task's outputs, in a few torch calls per task."""
    return head.kind.predictions(head, logits, rows or [None] * len(logits))


def single_labels(head: TaskHead, logits: torch.Tensor) -> list[dict]:
    """Classification: the best label, its score and every label's softmax score."""
    out = []
    for probs in torch.softmax(logits.float(), dim=-1).tolist():
        best = max(range(len(probs)), key=probs.__getitem__)
        scores = dict(zip(head.labels, probs, strict=True))
        out.append({"label": head.labels[best], "score": probs[best], "scores": scores})
    return out


def multi_label(head: TaskHead, scores: list[float]) -> dict:
    """Every label whose sigmoid score reaches its threshold, in label order."""
    chosen = [
        label
        for label, score, threshold in zip(head.labels, scores, head.thresholds, strict=True)
        if score >= threshold
    ]
    return {"labels": chosen, "scores": dict(zip(head.labels, scores, strict=True))}


def tokens(head: TaskHead, probs: torch.Tensor, row: EncodedRow) -> dict:
    """One entry per word (tagged by its first sub-token), and entities for B-/I- tag sets."""
    text, offsets, word_ids = row["text"], row["offsets"], row["word_ids"]
    best_score, best = probs[: len(word_ids)].max(dim=-1)  # (T,)
    scores, tags = best_score.tolist(), best.tolist()
    words: list[dict] = []
    last_word = None
    for j, word in enumerate(word_ids):
        if word is None:
            continue
        if word == last_word:  # a later sub-token of the same word extends it
            words[-1]["end"] = offsets[j][1]
            continue
        last_word = word
        label = head.labels[tags[j]]
        words.append(
            {"start": offsets[j][0], "end": offsets[j][1], "label": label, "score": scores[j]}
        )
    tokens = [{"text": text[w["start"] : w["end"]], **w} for w in words]
    prediction: dict = {"tokens": tokens}
    if any(label[:2] in ("B-", "I-") for label in head.labels):
        prediction["entities"] = _entities(text, tokens)
    return prediction


def _entities(text: str, tokens: list[dict]) -> list[dict]:
    """Spans that start at B-X (or an I-X not continuing an X) and extend over following I-X."""
    entities: list[dict] = []
    open_span: dict | None = None
    for token in tokens:
        prefix, kind = token["label"][:2], token["label"][2:]
        if prefix == "I-" and open_span is not None and open_span["label"] == kind:
            open_span["end"] = token["end"]
            open_span["scores"].append(token["score"])
            continue
        open_span = None
        if prefix in ("B-", "I-"):
            open_span = {"label": kind, "start": token["start"], "end": token["end"]}
            open_span["scores"] = [token["score"]]
            entities.append(open_span)
    return [
        {
            "label": e["label"],
            "text": text[e["start"] : e["end"]],
            "start": e["start"],
            "end": e["end"],
            "score": sum(e["scores"]) / len(e["scores"]),
        }
        for e in entities
    ]
