"""Turning a row's logits into the prediction a client receives."""

from __future__ import annotations

import torch

from .engine import TaskHead


def to_prediction(head: TaskHead, logits: torch.Tensor) -> dict:
    """Classification: label, score, scores (softmax); regression: value (logits[0])."""
    return to_predictions(head, logits[None])[0]


def to_predictions(head: TaskHead, logits: torch.Tensor) -> list[dict]:
    """`to_prediction` of each row of (rows, n) logits of one task, in two torch calls."""
    if head.kind == "regression":
        return [{"value": row[0]} for row in logits.float().tolist()]
    out = []
    for probs in torch.softmax(logits.float(), dim=-1).tolist():
        best = max(range(len(probs)), key=probs.__getitem__)
        scores = dict(zip(head.labels, probs, strict=True))
        out.append({"label": head.labels[best], "score": probs[best], "scores": scores})
    return out
