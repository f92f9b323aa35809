"""Scoring a patch on dev data through the same engine the server uses."""

from __future__ import annotations

import numpy as np
import torch

from ..patches.backbone import load_backbone
from ..patches.engine import MultiTaskEngine
from ..patches.patch_file import PatchFile
from .data import TaskData
from .metrics import score


def gold_labels(patch: PatchFile, data: TaskData) -> list:
    """Dev labels as the patch's label ids (or floats for regression)."""
    if patch.kind == "regression":
        return [float(e.label) for e in data.dev]
    if patch.kind == "multi_label":
        unknown = sorted({n for e in data.dev for n in e.label} - set(patch.labels))
        if unknown:
            raise ValueError(
                f"dev labels {unknown} are not among the patch's labels {patch.labels}"
            )
        return [[int(label in e.label) for label in patch.labels] for e in data.dev]
    index = {label: i for i, label in enumerate(patch.labels)}
    missing = sorted({e.label for e in data.dev} - index.keys())
    if missing:
        raise ValueError(f"dev labels {missing} are not among the patch's labels {patch.labels}")
    return [index[e.label] for e in data.dev]


def evaluate_patch(
    patch: PatchFile,
    data: TaskData,
    backbone: str,
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 64,
) -> dict[str, float]:
    """Dev metrics of a patch, computed by the multi-task engine (float32 by default)."""
    if patch.kind not in ("classification", "regression", "multi_label"):
        raise ValueError(
            f"eval scores classification, regression and multi_label patches; {patch.task!r} is a "
            f"{patch.kind} patch (serve it, or score its predictions yourself)"
        )
    engine = MultiTaskEngine(load_backbone(backbone, dtype=dtype, device=device))
    engine.register(patch.task, patch)
    items = [e.text if e.pair is None else (e.text, e.pair) for e in data.dev]
    logits = engine.predict_logits(patch.task, items, batch_size=batch_size)
    matrix = torch.stack(logits).numpy().astype(np.float64)  # (N, n)
    own = patch.threshold is not None or patch.thresholds is not None
    thresholds = patch.label_thresholds() if patch.kind == "multi_label" and own else None
    metrics = score(data.name, patch.kind, matrix, gold_labels(patch, data), thresholds)
    return {k: round(v, 4) for k, v in metrics.items()}
