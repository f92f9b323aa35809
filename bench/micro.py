"""Micro-benchmark: one mixed 16-task forward vs a single-task forward (and bias swapping), and
a forward mixing all five task kinds.

Prints median times and ratios for B=32, L=64 in each dtype; measurements are interleaved so
machine noise hits every variant alike.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import replace

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.patch_file import PatchFile

from .workload import glue_sentences


def random_patches(backbone, n: int, seed: int = 0) -> list[PatchFile]:
    """n patches whose every bias is the backbone's plus noise (as a trained patch differs)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(backbone.model.named_parameters())
    hidden = backbone.spec.hidden_size
    out = []
    for i in range(n):
        biases = {
            name: params[name].detach().float().cpu() + 0.05 * torch.randn(shape, generator=gen)
            for name, shape in backbone.spec.bias_shapes.items()
        }
        out.append(
            PatchFile(
                task=f"t{i}",
                kind="classification",
                labels=["a", "b"],
                pooling="mean",
                max_length=128,
                backbone=backbone.spec.name,
                backbone_sha256=backbone.spec.sha256,
                biases=biases,
                head_weight=torch.randn((2, hidden), generator=gen),
                head_bias=torch.zeros(2),
            )
        )
    return out


def kind_patches(backbone) -> list[PatchFile]:
    """One patch of each task kind (k0..k4): classification, regression, multi-label (3
    labels), token tagging (5 tags), a 64-dim embedding."""
    hidden = backbone.spec.hidden_size
    gen = torch.Generator().manual_seed(1)
    base = random_patches(backbone, 5, seed=1)

    def head(n: int) -> dict:
        return {"head_weight": torch.randn((n, hidden), generator=gen), "head_bias": torch.zeros(n)}

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    kinds = [
        {"kind": "classification"},
        {"kind": "regression", "labels": [], **head(1)},
        {"kind": "multi_label", "labels": ["x", "y", "z"], **head(3)},
        {"kind": "token_classification", "labels": tags, "pooling": "none", **head(5)},
        {"kind": "embedding", "labels": [], **head(64)},
    ]
    return [replace(p, task=f"k{i}", **k) for i, (p, k) in enumerate(zip(base, kinds, strict=True))]


def fixed_batch(tokenizer, batch: int, length: int) -> dict[str, torch.Tensor]:
    """Rows of exactly `length` real tokens (no padding): GLUE sentences joined, truncated."""
    texts = [" ".join(glue_sentences(length // 4, seed=i)) for i in range(batch)]
    return dict(
        tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
    )


class BiasSwapper:
    """The alternative design: copy a task's biases into the model under a lock, then run."""

    def __init__(self, backbone, patches: list[PatchFile]):
        self.model = backbone.model
        self.params = dict(backbone.model.named_parameters())
        self.patches = {p.task: p for p in patches}
        self.lock = threading.Lock()

    def run(self, batch: dict[str, torch.Tensor], rows_of: dict[str, list[int]]) -> None:
        """One forward per task group, each after copying that task's biases in."""
        for task, rows in rows_of.items():
            sub = {k: v[rows] for k, v in batch.items()}
            with self.lock, torch.inference_mode():
                for name, value in self.patches[task].biases.items():
                    self.params[name].copy_(value)
                self.model(**sub)

    def run_per_request(self, batch: dict[str, torch.Tensor], keys: list[str]) -> None:
        """One forward per row (request), each after copying its task's biases in."""
        for i, key in enumerate(keys):
            self.run({k: v[i : i + 1] for k, v in batch.items()}, {key: [0]})


def measure(variants: dict, reps: int) -> dict[str, float]:
    """Median seconds per variant, interleaved round-robin after one warm-up each."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def run_micro(
    dtypes=("float32", "bfloat16"),
    batch: int = 32,
    length: int = 64,
    n_tasks: int = 16,
    reps: int = 20,
) -> list[dict]:
    """Rows of {dtype, variant, ms, vs_single} for the report."""
    rows = []
    for dtype in dtypes:
        medians = _micro_one(dtype, batch, length, n_tasks, reps)
        single = medians["bitpatch single-task"]
        rows += [
            {"dtype": dtype, "variant": name, "ms": 1000 * seconds, "vs_single": seconds / single}
            for name, seconds in medians.items()
        ]
    return rows


def _micro_one(dtype: str, batch: int, length: int, n_tasks: int, reps: int) -> dict:
    backbone = load_backbone("default", dtype=dtype, device="cpu")
    engine = MultiTaskEngine(backbone, "packed")
    padded = MultiTaskEngine(load_backbone("default", dtype=dtype, device="cpu"), "padded")
    patches = random_patches(backbone, n_tasks)
    for p in patches + kind_patches(backbone):
        engine.register(p.task, p)
        padded.register(p.task, p)
    kind_keys = [f"k{i % 5}" for i in range(batch)]
    inputs = fixed_batch(backbone.tokenizer, batch, length)
    mixed_keys = [f"t{i % n_tasks}" for i in range(batch)]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(mixed_keys):
        groups.setdefault(key, []).append(i)
    swapper = BiasSwapper(backbone, patches)
    return measure(
        {
            "plain HF forward (no patch)": lambda: _plain(backbone.model, inputs),
            "bitpatch single-task": lambda: engine.forward(inputs, ["t0"] * batch),
            f"bitpatch mixed {n_tasks}-task": lambda: engine.forward(inputs, mixed_keys),
            "bitpatch mixed 5 task kinds": lambda: engine.forward(inputs, kind_keys),
            "padded forward, single-task": lambda: padded.forward(inputs, ["t0"] * batch),
            f"padded forward, mixed {n_tasks}-task": lambda: padded.forward(inputs, mixed_keys),
            "swap biases per task group": lambda: swapper.run(inputs, groups),
            "swap biases per request": lambda: swapper.run_per_request(inputs, mixed_keys),
        },
        reps,
    )


def _plain(model, inputs):
    with torch.inference_mode():
        return model(**inputs)


def format_rows(rows: list[dict], batch: int = 32, length: int = 64) -> str:
    """Markdown table."""
    lines = [
        f"B={batch}, L={length}, median of interleaved runs",
        "",
        "| dtype | variant | ms / batch | x single-task |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['variant']} | {r['ms']:.1f} | {r['vs_single']:.3f} |")
    return "\n".join(lines)
