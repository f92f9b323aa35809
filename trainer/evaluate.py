"""Scoring a patch on dev data through the same engine the server uses."""

from __future__ import annotations

import numpy as np
import torch

from ..patches.backbone import load_backbone
from ..patches.encoding import encode_inputs
from ..patches.engine import MultiTaskEngine
from ..patches.examples import TRAINER_EXAMPLES
from ..patches.patch_file import PatchFile
from .data import TaskData
from .kinds import training_kind
from .metrics import embedding_metrics, has_bio_tags, tagging_metrics


def golden_examples(patch: PatchFile, data: TaskData, engine: MultiTaskEngine) -> list[dict]:
    """Up to 8 dev inputs and the predictions a float32 engine answers for them, in the
    patch's `examples` metadata (a server checks them on upload)."""
    engine.register(patch.task, patch)  # the patch as saved (a chosen threshold included)
    per_text = training_kind(patch.kind).pairwise or patch.inputs != "text_pair"
    items = [
        e.text if per_text or e.pair is None else [e.text, e.pair]
        for e in data.dev[:TRAINER_EXAMPLES]
    ]
    answers = engine.predict(patch.task, items)
    return [{"input": item, "output": answer} for item, answer in zip(items, answers, strict=True)]


def gold_labels(patch: PatchFile, data: TaskData) -> list:
    """Dev labels as the patch's label ids (or floats for regression, multi-hot rows)."""
    return training_kind(patch.kind).gold(list(patch.labels), data.dev)


def evaluate_patch(
    patch: PatchFile,
    data: TaskData,
    backbone: str,
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 64,
    engine: MultiTaskEngine | None = None,
) -> dict[str, float]:
    """Dev metrics of a patch, computed by the multi-task engine (float32 by default; `engine`:
    one already loaded on that backbone, instead of loading it here)."""
    engine = engine or MultiTaskEngine(load_backbone(backbone, dtype=dtype, device=device))
    engine.register(patch.task, patch)
    kind = training_kind(patch.kind)
    if kind.pairwise:
        return {k: round(v, 4) for k, v in _pair_scores(engine, patch, data, batch_size).items()}
    if kind.per_token:
        return {k: round(v, 4) for k, v in _tagging_scores(engine, patch, data).items()}
    items = [e.text if e.pair is None else (e.text, e.pair) for e in data.dev]
    logits = engine.predict_logits(patch.task, items, batch_size=batch_size)
    matrix = torch.stack(logits).numpy().astype(np.float64)  # (N, n)
    own = patch.threshold is not None or patch.thresholds is not None  # multi_label only
    thresholds = patch.label_thresholds() if own else None
    metrics = kind.score(data.name, matrix, gold_labels(patch, data), thresholds)
    return {k: round(v, 4) for k, v in metrics.items()}


def _tagging_scores(engine: MultiTaskEngine, patch: PatchFile, data: TaskData) -> dict:
    """Word tags as the server computes them, matched to the gold words by character offset
    (a gold word's tag is the tag of the token that starts where it starts)."""
    texts = [e.text for e in data.dev]
    rows = encode_inputs(engine.backbone.tokenizer, texts, patch.max_length, offsets=True)
    logits = engine.predict_logits(patch.task, texts)
    predicted, gold = [], []
    for e, row, tags in zip(data.dev, rows, logits, strict=True):
        tag_at = {}
        for j, (word, (start, _)) in enumerate(zip(row["word_ids"], row["offsets"], strict=True)):
            if word is not None and start not in tag_at:
                tag_at[start] = patch.labels[int(tags[j].argmax())]
        starts = [sum(len(w) + 1 for w in e.words[:i]) for i in range(len(e.words))]
        kept = [i for i, start in enumerate(starts) if start in tag_at]  # truncation drops words
        predicted.append([tag_at[starts[i]] for i in kept])
        gold.append([e.label[i] for i in kept])
    return tagging_metrics(predicted, gold, has_bio_tags(patch.labels))


def _pair_scores(engine: MultiTaskEngine, patch: PatchFile, data: TaskData, batch_size: int):
    """Cosine of each dev pair's embeddings: Spearman against the scores, or (unscored) how
    often a text's own pair is the nearest of all the dev pairs."""
    u = torch.stack(engine.predict_logits(patch.task, [e.text for e in data.dev], batch_size))
    v = torch.stack(engine.predict_logits(patch.task, [e.pair for e in data.dev], batch_size))
    u, v = torch.nn.functional.normalize(u, dim=-1), torch.nn.functional.normalize(v, dim=-1)
    similarity = u @ v.T  # (N, N)
    cosine = similarity.diagonal()
    best_other = (similarity - 3 * torch.eye(len(u))).max(-1).values
    gold = [-1.0 if e.label is None else float(e.label) for e in data.dev]
    return embedding_metrics(cosine.numpy(), best_other.numpy(), gold)
