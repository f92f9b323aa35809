"""The multi-task engine: one frozen backbone, per-task bias tables, one forward per batch."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch

from .backbone import Backbone
from .encoding import Item, collate, encode_inputs
from .patch_file import PatchFile, check_fits
from .pooling import pool
from .task_layers import install_task_layers, row_biases

MIN_CAPACITY = 16


@dataclass(frozen=True)
class TaskHead:
    """A task's pooling and linear head, on the engine's device in float32."""

    kind: str
    labels: tuple[str, ...]
    pooling: str
    max_length: int
    weight: torch.Tensor  # (n, H)
    bias: torch.Tensor  # (n,)


@dataclass(frozen=True)
class EngineState:
    """An immutable view of the registered tasks; a forward keeps the one it started with."""

    slot_of: Mapping[str, int]  # task key -> row in every bias table
    tables: Mapping[str, torch.Tensor]  # bias name -> (capacity, dim)
    heads: Mapping[str, TaskHead]
    capacity: int
    next_slot: int  # rows >= next_slot are unused by every state sharing these tables


class MultiTaskEngine:
    """Serves any mix of registered bias patches in one batched forward of a shared backbone."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.patchable = set(install_task_layers(backbone.model))
        params = dict(backbone.model.named_parameters())
        self._base = {name: params[name].detach().clone() for name in self.patchable}
        self._lock = threading.Lock()
        self._state = EngineState({}, {}, {}, 0, 0)

    @property
    def state(self) -> EngineState:
        """The current immutable state."""
        return self._state

    def registered_keys(self) -> list[str]:
        """Registered task keys."""
        return list(self._state.slot_of)

    def register(self, key: str, patch: PatchFile) -> None:
        """Add or replace the patch served under `key`; forwards in flight are unaffected."""
        check_fits(patch, self.backbone.spec)
        unknown = set(patch.biases) - self.patchable
        if unknown:
            raise ValueError(f"biases {sorted(unknown)} are not Linear/LayerNorm biases")
        with self._lock:
            state = self._state
            if state.next_slot >= state.capacity:
                state = self._rebuild(state, extra=1)
            tables = self._tables_for(state, patch)
            slot = state.next_slot
            for name, table in tables.items():
                table[slot] = patch.biases.get(name, self._base[name]).to(table.dtype)
            self._state = replace(
                state,
                tables=tables,
                next_slot=slot + 1,
                slot_of={**state.slot_of, key: slot},
                heads={**state.heads, key: self._head_of(patch)},
            )

    def register_many(self, items: Iterable[tuple[str, PatchFile]]) -> None:
        """Register several patches (start-up)."""
        for key, patch in items:
            self.register(key, patch)

    def unregister(self, key: str) -> None:
        """Stop serving `key`; its row is reclaimed at the next rebuild."""
        with self._lock:
            state = self._state
            if key not in state.slot_of:
                return
            slot_of = {k: s for k, s in state.slot_of.items() if k != key}
            heads = {k: h for k, h in state.heads.items() if k != key}
            self._state = replace(state, slot_of=slot_of, heads=heads)

    def _tables_for(self, state: EngineState, patch: PatchFile) -> dict[str, torch.Tensor]:
        """The state's tables plus new ones (filled with the backbone's value) for new names."""
        tables = dict(state.tables)
        for name in patch.biases:
            if name not in tables:
                base = self._base[name]  # (dim,)
                tables[name] = base.expand(state.capacity, -1).clone()  # (capacity, dim)
        return tables

    def _rebuild(self, state: EngineState, extra: int) -> EngineState:
        """New tables holding only live rows, with room to grow; old states keep old tables."""
        live = sorted(state.slot_of.items(), key=lambda item: item[1])
        capacity = max(MIN_CAPACITY, 2 * (len(live) + extra))
        old_slots = torch.tensor([s for _, s in live], dtype=torch.long)
        tables = {}
        for name, table in state.tables.items():
            fresh = self._base[name].expand(capacity, -1).clone()  # (capacity, dim)
            if live:
                fresh[: len(live)] = table[old_slots.to(table.device)]
            tables[name] = fresh
        slot_of = {key: i for i, (key, _) in enumerate(live)}
        return EngineState(slot_of, tables, state.heads, capacity, len(live))

    def _head_of(self, patch: PatchFile) -> TaskHead:
        device = self.backbone.device
        return TaskHead(
            patch.kind,
            tuple(patch.labels),
            patch.pooling,
            patch.max_length,
            patch.head_weight.to(device, torch.float32),
            patch.head_bias.to(device, torch.float32),
        )

    def forward(self, batch: Mapping[str, torch.Tensor], keys: list[str]) -> list[torch.Tensor]:
        """Logits for each row of a padded batch, row i served by task `keys[i]`."""
        state = self._state
        missing = sorted(set(keys) - state.slot_of.keys())
        if missing:
            raise KeyError(f"tasks not registered with the engine: {missing}")
        device = self.backbone.device
        slots = torch.tensor([state.slot_of[k] for k in keys], device=device)  # (B,)
        with torch.inference_mode():
            biases = {n: t.index_select(0, slots) for n, t in state.tables.items()}  # (B, dim)
            inputs = {k: v.to(device) for k, v in batch.items()}
            with row_biases(biases):
                out = self.backbone.model(**inputs)
            pooled = self._pool(out, inputs["attention_mask"], [state.heads[k] for k in keys])
            return self._apply_heads(pooled, keys, state.heads)

    @staticmethod
    def _pool(out, mask: torch.Tensor, heads: list[TaskHead]) -> torch.Tensor:
        """(B, H) float32: each row pooled the way its task asks."""
        poolings = [h.pooling for h in heads]
        pooled = torch.empty(
            out.last_hidden_state.shape[::2], dtype=torch.float32, device=mask.device
        )  # (B, H)
        for pooling in set(poolings):
            rows = [i for i, p in enumerate(poolings) if p == pooling]
            pooled[rows] = pool(out, mask, pooling)[rows].float()
        return pooled

    @staticmethod
    def _apply_heads(pooled: torch.Tensor, keys: list[str], heads) -> list[torch.Tensor]:
        """Each row's logits through its own task's head (label counts differ per task)."""
        rows_of: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows_of.setdefault(key, []).append(i)
        logits: list[torch.Tensor | None] = [None] * len(keys)
        for key, rows in rows_of.items():
            head = heads[key]
            group = pooled[rows] @ head.weight.T + head.bias  # (rows, n)
            for row, value in zip(rows, group.cpu(), strict=True):
                logits[row] = value
        return logits

    def predict_logits(self, key: str, items: list[Item], batch_size: int = 64):
        """Encode and run `items` for one task in chunks (CLI and evaluation)."""
        head = self._state.heads[key]
        tokenizer = self.backbone.tokenizer
        out: list[torch.Tensor] = []
        for start in range(0, len(items), batch_size):
            rows = encode_inputs(tokenizer, items[start : start + batch_size], head.max_length)
            out += self.forward(collate(rows, tokenizer.pad_token_id), [key] * len(rows))
        return out
