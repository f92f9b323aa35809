"""The multi-task engine: one frozen backbone, per-task bias vectors, one forward per batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .backbone import Backbone
from .encoding import Item, collate, encode_inputs
from .examples import first_difference, tolerance_for
from .forwards import choose_forward
from .kinds import TaskKind, kind_named
from .outputs import to_predictions
from .patch_file import CheckedPatch, PatchError, PatchFile, check_fits, patch_of
from .pooling import pool
from .row_encoder import RowEncoder
from .task_layers import install_task_layers


@dataclass(frozen=True)
class TaskHead:
    """A task's pooling and linear head, on the engine's device in float32."""

    kind: TaskKind
    labels: tuple[str, ...]
    pooling: str  # "none": every token (token_classification)
    max_length: int
    weight: torch.Tensor | None  # (n, H); None: an embedding without projection
    bias: torch.Tensor | None  # (n,)
    inputs: str = ""  # "text", "text_pair", or "" (either)
    thresholds: tuple[float, ...] = ()  # multi_label: one per label
    normalize: bool = False  # embedding: L2-normalised output

    @property
    def takes_pairs(self) -> bool:
        """Whether requests may send [text, text_pair] (token and embedding tasks: no)."""
        return self.kind.takes_pairs

    @property
    def wants_offsets(self) -> bool:
        """Whether its rows need each token's character offsets and word (token tasks)."""
        return self.kind.per_token


@dataclass(frozen=True)
class TaskLogits:
    """One task's rows of a batch and their head's outputs."""

    key: str
    rows: list[int]  # positions in the batch
    # float32 on the CPU: (rows, n) logits; (rows, T, n) for token_classification (T: the
    # batch's padded length); (rows, d) vectors for an embedding
    logits: torch.Tensor


@dataclass(frozen=True)
class EngineState:
    """An immutable view of the registered tasks; a forward keeps the one it started with."""

    vectors: Mapping[str, torch.Tensor]  # task key -> (total,) every patchable bias, flat
    heads: Mapping[str, TaskHead]


class Engine(Protocol):
    """What the server needs of an engine; `MultiTaskEngine` is the one it ships with."""

    backbone: Backbone

    @property
    def forward_name(self) -> str: ...
    @property
    def forward_kernel(self) -> str: ...
    @property
    def forward_yields(self) -> bool: ...
    @property
    def state(self) -> EngineState: ...
    def register(self, key: str, patch: PatchFile | CheckedPatch) -> None: ...
    def unregister(self, key: str) -> None: ...
    def is_registered(self, key: str) -> bool: ...
    def check_outputs(self, patch: PatchFile | CheckedPatch) -> None: ...
    def warm_up(self, lengths: tuple[int, ...] = ...) -> None: ...
    def forward_by_task(
        self, batch: Mapping[str, torch.Tensor], keys: list[str]
    ) -> list[TaskLogits]: ...


# builds an engine on a loaded backbone: (backbone, forward, cache_root) as MultiTaskEngine takes
EngineFactory = Callable[[Backbone, str, "Path | None"], Engine]


class MultiTaskEngine:
    """Serves any mix of registered bias patches in one batched forward of a shared backbone.

    Each task is one flat vector of all patchable biases (its patched values, the backbone's
    elsewhere). A forward stacks its rows' vectors (B, total) and hands every task layer its
    slice (B, dim): one gather per batch, whatever the mix of tasks. Registering builds a new
    vector and swaps in a new immutable state, so forwards in flight keep what they started with.
    """

    def __init__(self, backbone: Backbone, forward: str = "auto", cache_root: Path | None = None):
        """`forward`: auto | onnxruntime | hybrid | packed | padded (see `forwards.py`);
        `cache_root`: where compiled forwards are cached (default: the user's cache folder)."""
        self.backbone = backbone
        names = install_task_layers(backbone.model)
        self.patchable = set(names)
        params = dict(backbone.model.named_parameters())
        self._base = {name: params[name].detach().clone() for name in names}
        sizes = [self._base[n].numel() for n in names]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self._layout = list(zip(names, offsets, sizes, strict=True))
        self._slices = {n: slice(o, o + d) for n, o, d in self._layout}
        self._lock = threading.Lock()
        self._state = EngineState({}, {})
        self.backbone_forward = choose_forward(forward, backbone, self._slices, cache_root)

    @property
    def forward_name(self) -> str:
        """Which forward runs: onnxruntime, hybrid, packed or padded."""
        return self.backbone_forward.name

    @property
    def forward_kernel(self) -> str:
        """What runs the forward's matrix products: aten, onednn_prepacked, onnxruntime, or
        onnxruntime+aten (hybrid)."""
        return self.backbone_forward.kernel

    @property
    def forward_yields(self) -> bool:
        """Whether its forward lets its thread run other work between layers (layer_breaks.py)."""
        return self.backbone_forward.yields

    @property
    def state(self) -> EngineState:
        """The current immutable state."""
        return self._state

    def registered_keys(self) -> list[str]:
        """Registered task keys."""
        return list(self._state.vectors)

    def is_registered(self, key: str) -> bool:
        """Whether `key` is served."""
        return key in self._state.vectors

    def register(self, key: str, patch: PatchFile | CheckedPatch) -> None:
        """Add or replace the patch served under `key`; forwards in flight are unaffected."""
        patch = self.fitted(patch)
        vector, head = self._vector_of(patch.biases), self._head_of(patch)
        with self._lock:
            state = self._state
            self._state = EngineState({**state.vectors, key: vector}, {**state.heads, key: head})

    def unregister(self, key: str) -> None:
        """Stop serving `key` (forwards in flight still finish with it)."""
        with self._lock:
            state = self._state
            if key in state.vectors:
                vectors = {k: v for k, v in state.vectors.items() if k != key}
                heads = {k: h for k, h in state.heads.items() if k != key}
                self._state = EngineState(vectors, heads)

    def _vector_of(self, biases: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(total,) in the model's dtype; filled bias by bias so no copy is big enough to
        start a thread pool outside the inference thread."""
        total = self._layout[-1][1] + self._layout[-1][2] if self._layout else 0
        first = next(iter(self._base.values()))
        vector = torch.empty(total, dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for name, offset, size in self._layout:
                value = biases.get(name, self._base[name])
                vector[offset : offset + size].copy_(value.reshape(-1))
        return vector

    def warm_up(self, lengths: tuple[int, ...] = (8, 32, 128)) -> None:
        """Run dummy batches through the forward on this thread's CPU threads, so the first
        request pays no set-up (kernels; the onnxruntime session of that thread count)."""
        vector = self._vector_of({})
        vocab = self.backbone.model.config.vocab_size
        for length in {min(n, self.backbone.spec.max_positions) for n in lengths}:
            ids = torch.randint(0, vocab, (2, length), device=self.backbone.device)  # (B, T)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            with torch.inference_mode():
                self._run_backbone(inputs, ["a", "a"], {"a": vector})  # one task
                self._run_backbone(inputs, ["a", "b"], {"a": vector, "b": vector.clone()})

    def _head_of(self, patch: PatchFile) -> TaskHead:
        device = self.backbone.device
        weight, bias = patch.head_weight, patch.head_bias
        kind = kind_named(patch.kind)
        return TaskHead(
            kind,
            tuple(patch.labels),
            patch.pooling,
            patch.max_length,
            None if weight is None else weight.to(device, torch.float32),
            None if bias is None else bias.to(device, torch.float32),
            patch.inputs,
            tuple(patch.label_thresholds()) if "thresholds" in kind.options else (),
            "normalize" in kind.options and patch.normalize,
        )

    def forward(self, batch: Mapping[str, torch.Tensor], keys: list[str]) -> list[torch.Tensor]:
        """Logits for each row of a padded batch, row i served by task `keys[i]`."""
        logits: list[torch.Tensor] = [torch.empty(0)] * len(keys)
        for group in self.forward_by_task(batch, keys):
            for row, value in zip(group.rows, group.logits, strict=True):
                logits[row] = value
        return logits

    def forward_by_task(
        self, batch: Mapping[str, torch.Tensor], keys: list[str]
    ) -> list[TaskLogits]:
        """One forward of a padded batch, row i served by task `keys[i]`; logits per task."""
        state = self._state
        missing = sorted(set(keys) - state.vectors.keys())
        if missing:
            raise KeyError(f"tasks not registered with the engine: {missing}")
        return self._forward(batch, keys, state.vectors, state.heads)

    def _forward(self, batch, keys: list[str], vectors, heads) -> list[TaskLogits]:
        device = self.backbone.device
        with torch.inference_mode():
            inputs = {k: v.to(device) for k, v in batch.items()}
            out = self._run_backbone(inputs, keys, vectors)
            pooled = self._pool(out, inputs["attention_mask"], [heads[k] for k in keys])
            return self._apply_heads(pooled, out.last_hidden_state, keys, heads)

    def fitted(self, patch: PatchFile | CheckedPatch) -> PatchFile:
        """The decoded patch, checked against this backbone unless it was checked already;
        ValueError for a bias the engine cannot patch."""
        if isinstance(patch, CheckedPatch) and patch.backbone_sha256 == self.backbone.spec.sha256:
            patch = patch.patch
        else:
            patch = patch_of(patch)
            check_fits(patch, self.backbone.spec)
        unknown = set(patch.biases) - self.patchable
        if unknown:
            raise ValueError(f"biases {sorted(unknown)} are not Linear/LayerNorm biases")
        return patch

    def check_outputs(self, patch: PatchFile | CheckedPatch) -> None:
        """Run a patch (not registered) on two short inputs, then on its golden examples;
        PatchError if any output is not finite (e.g. finite but huge biases that overflow a
        LayerNorm) or an example's answer is not the one the patch carries."""
        patch = self.fitted(patch)
        self._check_finite(patch)
        if patch.examples:
            self._check_examples(patch)

    def _check_examples(self, patch: PatchFile) -> None:
        """PatchError (parity_failed) naming the first example answered otherwise."""
        items = [e["input"] for e in patch.examples]
        answers = self._answers(items, self._vector_of(patch.biases), self._head_of(patch))
        tolerance = tolerance_for(self.backbone.dtype)
        for i, (example, got) in enumerate(zip(patch.examples, answers, strict=True)):
            difference = first_difference(example["output"], got, tolerance)
            if difference is not None:
                raise PatchError(
                    f"examples[{i}] (input {example['input']!r}) is answered otherwise here: "
                    f"{difference}; the patch carries {example['output']} and this server "
                    f"computes {got}. It was trained against another backbone, tokenizer or "
                    "engine: retrain it against this server's backbone, or drop its examples",
                    key="examples",
                    code="parity_failed",
                )

    def predict(self, key: str, items: list[Item]) -> list[dict]:
        """One registered task's predictions of `items`, exactly as the server answers them
        (one forward: keep `items` to a batch)."""
        state = self._state
        return self._answers(items, state.vectors[key], state.heads[key])

    def _answers(self, items: list[Item], vector: torch.Tensor, head: TaskHead) -> list[dict]:
        """Predictions of `items` through one bias vector and head, encoded as the server
        encodes requests."""
        rows = RowEncoder(self.backbone.tokenizer).encode(
            items, head.max_length, head.wants_offsets
        )
        batch = collate(rows, self.backbone.tokenizer.pad_token_id)
        key = "one"
        (group,) = self._forward(batch, [key] * len(rows), {key: vector}, {key: head})
        return to_predictions(head, group.logits, rows)

    def _check_finite(self, patch: PatchFile) -> None:
        """PatchError unless the patch's outputs on two short inputs are finite."""
        items: list[Item] = ["a short check sentence", ["a short check", "sentence pair"]]
        rows = encode_inputs(self.backbone.tokenizer, items, patch.max_length)
        batch = collate(rows, self.backbone.tokenizer.pad_token_id)
        key = "check"
        vectors, heads = {key: self._vector_of(patch.biases)}, {key: self._head_of(patch)}
        groups = self._forward(batch, [key, key], vectors, heads)
        if not all(torch.isfinite(g.logits).all() for g in groups):
            raise PatchError(
                "the patch's outputs are not finite (nan or inf) on a test input: its biases "
                "or head overflow the backbone's arithmetic; retrain it, or check its values",
                key="bias",
                code="non_finite_outputs",
            )

    def _run_backbone(self, inputs, keys: list[str], vectors: Mapping[str, torch.Tensor]):
        """The backbone's output with row i using the bias vector of task `keys[i]`."""
        index = {key: i for i, key in enumerate(dict.fromkeys(keys))}  # task -> row of `table`
        table = torch.stack([vectors[key] for key in index])  # (U, total)
        row_task = torch.tensor([index[k] for k in keys], device=table.device)  # (B,)
        return self.backbone_forward(inputs, table, row_task)

    @staticmethod
    def _pool(out, mask: torch.Tensor, heads: list[TaskHead]) -> torch.Tensor:
        """(B, H) float32: each row pooled the way its task asks."""
        poolings = [h.pooling for h in heads]
        pooled = torch.zeros(
            out.last_hidden_state.shape[::2], dtype=torch.float32, device=mask.device
        )  # (B, H); rows of token tasks ("none") stay zero
        for pooling in set(poolings) - {"none"}:
            rows = [i for i, p in enumerate(poolings) if p == pooling]
            pooled[rows] = pool(out, mask, pooling)[rows].float()
        return pooled

    @staticmethod
    def _apply_heads(
        pooled: torch.Tensor, hidden: torch.Tensor, keys: list[str], heads
    ) -> list[TaskLogits]:
        """Each task's rows through its own head (output sizes and kinds differ per task)."""
        rows_of: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows_of.setdefault(key, []).append(i)
        return [
            TaskLogits(key, rows, head_outputs(heads[key], pooled[rows], hidden[rows]).cpu())
            for key, rows in rows_of.items()
        ]

    def predict_logits(self, key: str, items: list[Item], batch_size: int = 64):
        """Encode and run `items` for one task in chunks (CLI and evaluation); one tensor per
        item: (n,) logits, (T, n) per token of a token task, (d,) for an embedding."""
        head = self._state.heads[key]
        tokenizer = self.backbone.tokenizer
        out: list[torch.Tensor] = []
        for start in range(0, len(items), batch_size):
            rows = encode_inputs(tokenizer, items[start : start + batch_size], head.max_length)
            logits = self.forward(collate(rows, tokenizer.pad_token_id), [key] * len(rows))
            if head.kind.per_token:  # drop the batch's padding
                logits = [x[: len(r["input_ids"])] for x, r in zip(logits, rows, strict=True)]
            out += logits
        return out


def head_outputs(head: TaskHead, pooled: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """One task's rows through its head (see `TaskKind.head_outputs`)."""
    return head.kind.head_outputs(head, pooled, hidden)
