"""The designs users would otherwise build, as engines the same HTTP server can run.

(a) `CopiesEngine`: one full model copy per task, each row group run by its task's copy.
(b) `SwapEngine`: one model; for each task group of a batch, copy that task's biases into the
    model under a lock, then run the group (swapping once per request, as users often write
    it, is slower still; `bench micro` measures it offline).
(c) `LoraEngine`: one model with a PEFT LoRA adapter per task (r=8 on query and value), every
    batch one mixed-adapter forward (`adapter_names=`, PEFT's own multi-task batching); the
    task's head and pooling come from its patch. Needs `peft` importable (`bench peers`
    installs it into a folder of its own and puts it on this server's path only).
"""

from __future__ import annotations

import copy
import threading

import torch

from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.patch_file import PatchFile


def _groups(keys: list[str]) -> list[tuple[str, list[int]]]:
    """Row indices per task, each group with its task key."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.items())


class _GroupedEngine(MultiTaskEngine):
    """Keeps MultiTaskEngine's registry and heads; runs one forward per task group through the
    transformers model itself (whatever forward the server names)."""

    def __init__(self, backbone, forward="padded", cache_root=None):
        super().__init__(backbone, "padded", cache_root)

    def _run_group(self, key: str, inputs: dict[str, torch.Tensor]):
        raise NotImplementedError

    def forward_by_task(self, batch, keys):
        state = self.state
        pooled_rows = [None] * len(keys)  # (H,) each
        hidden_rows = [None] * len(keys)  # (T, H) each: token tasks read every token
        with torch.inference_mode():
            for key, rows in _groups(keys):
                sub = {k: v[rows].to(self.backbone.device) for k, v in batch.items()}
                out = self._run_group(key, sub)
                pooled = self._pool(out, sub["attention_mask"], [state.heads[key]] * len(rows))
                for j, row in enumerate(rows):
                    pooled_rows[row], hidden_rows[row] = pooled[j], out.last_hidden_state[j]
            pooled, hidden = torch.stack(pooled_rows), torch.stack(hidden_rows)  # (B, H), (B, T, H)
            return self._apply_heads(pooled, hidden, keys, state.heads)


class SwapEngine(_GroupedEngine):
    """Design (b): biases copied into the one model per task group, under a lock."""

    def __init__(self, backbone, forward="padded", cache_root=None):
        super().__init__(backbone, forward, cache_root)
        self._swap_lock = threading.Lock()
        self._params = dict(backbone.model.named_parameters())
        self._biases: dict[str, dict[str, torch.Tensor]] = {}

    def register(self, key: str, patch: PatchFile) -> None:
        super().register(key, patch)
        patch = self.fitted(patch)
        dtype = self.backbone.dtype
        full = {n: patch.biases.get(n, self._base[n]).to(dtype) for n in self._base}
        self._biases[key] = full

    def _run_group(self, key, inputs):
        with self._swap_lock:
            for name, value in self._biases[key].items():
                self._params[name].copy_(value)
            return self.backbone.model(**inputs)


class CopiesEngine(_GroupedEngine):
    """Design (a): a full copy of the backbone per task, biases set in."""

    def __init__(self, backbone, forward="padded", cache_root=None):
        super().__init__(backbone, forward, cache_root)
        self._copies: dict[str, torch.nn.Module] = {}

    def register(self, key: str, patch: PatchFile) -> None:
        super().register(key, patch)
        patch = self.fitted(patch)
        model = copy.deepcopy(self.backbone.model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in patch.biases.items():
                params[name].copy_(value.to(params[name].dtype))
        self._copies[key] = model

    def unregister(self, key: str) -> None:
        super().unregister(key)
        self._copies.pop(key, None)

    def _run_group(self, key, inputs):
        return self._copies[key](**inputs)


class LoraEngine(MultiTaskEngine):
    """Design (c): one backbone, a LoRA adapter per task, mixed-adapter padded forwards."""

    LORA_RANK = 8

    def __init__(self, backbone, forward="padded", cache_root=None):
        super().__init__(backbone, "padded", cache_root)  # PEFT runs the plain transformers forward
        self._peft = None
        self._adding = threading.Lock()
        # PEFT passes adapter_names to its LoRA layers through hooks registered on the shared
        # modules for the length of a call: two forwards at once would read each other's
        self._forwarding = threading.Lock()

    def _lora_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.LORA_RANK,
            lora_alpha=2 * self.LORA_RANK,
            target_modules=["query", "value"],
            init_lora_weights=False,  # random, as a trained adapter: every row pays its delta
        )

    def register(self, key: str, patch: PatchFile) -> None:
        super().register(key, patch)
        with self._adding:
            if self._peft is None:
                from peft import get_peft_model

                model = self.backbone.model
                self._peft = get_peft_model(model, self._lora_config(), adapter_name=key).eval()
            elif key not in self._peft.peft_config:
                self._peft.add_adapter(key, self._lora_config())
                self._peft.eval()

    def forward_by_task(self, batch, keys):
        state = self.state
        with torch.inference_mode():
            inputs = {k: v.to(self.backbone.device) for k, v in batch.items()}
            with self._forwarding:
                out = self._peft(**inputs, adapter_names=list(keys))
            heads = [state.heads[k] for k in keys]
            pooled = self._pool(out, inputs["attention_mask"], heads)  # (B, H)
            return self._apply_heads(pooled, out.last_hidden_state, keys, state.heads)


DESIGNS = {
    "bitpatch": MultiTaskEngine,
    "swap": SwapEngine,
    "copies": CopiesEngine,
    "lora": LoraEngine,
}
