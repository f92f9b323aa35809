"""Turning a row's logits into the prediction a client receives."""

from __future__ import annotations

import torch

from .engine import TaskHead


def to_prediction(head: TaskHead, logits: torch.Tensor) -> dict:
    """Classification: label, score, scores (softmax); regression: value (logits[0])."""
    if head.kind == "regression":
        return {"value": float(logits[0])}
    probs = torch.softmax(logits.float(), dim=-1).tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    return {
        "label": head.labels[best],
        "score": probs[best],
        "scores": dict(zip(head.labels, probs, strict=True)),
    }
