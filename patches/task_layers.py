"""Linear and LayerNorm layers that add a per-row (per-task) bias during one forward.

The backbone's own modules are re-classed in place (`module.__class__ = ...`), so weights,
parameter names and state dicts stay exactly those of the backbone; nothing is copied. Outside
a `row_biases(...)` context they compute exactly what the original module computes.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

# bias name -> (B, dim) tensor of each row's bias for the forward running in this context
_ROW_BIASES: ContextVar[dict[str, torch.Tensor] | None] = ContextVar("row_biases", default=None)


@contextlib.contextmanager
def row_biases(biases: dict[str, torch.Tensor]):
    """Within this block, task layers add `biases[name][row]` instead of their own bias."""
    token = _ROW_BIASES.set(biases)
    try:
        yield
    finally:
        _ROW_BIASES.reset(token)


def _broadcast(bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(B, dim) -> (B, 1, ..., dim) so it adds to an output of shape (B, ..., dim)."""
    if out.shape[0] != bias.shape[0]:
        raise RuntimeError(
            f"task layer saw a batch of {out.shape[0]} rows but {bias.shape[0]} row biases; "
            "this architecture reshapes the batch and is not supported by the engine"
        )
    return bias.view(bias.shape[0], *([1] * (out.dim() - 2)), bias.shape[-1])


class TaskLinear(nn.Linear):
    """nn.Linear whose bias may come per row from the active context."""

    bias_name: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ..., in) -> (B, ..., out)
        biases = _ROW_BIASES.get()
        rows = biases.get(self.bias_name) if biases else None
        if rows is None:
            return super().forward(x)
        out = F.linear(x, self.weight)  # (B, ..., out)
        return out + _broadcast(rows, out)


class TaskLayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose shift (bias) may come per row from the active context."""

    bias_name: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ..., H) -> (B, ..., H)
        biases = _ROW_BIASES.get()
        rows = biases.get(self.bias_name) if biases else None
        if rows is None:
            return super().forward(x)
        out = F.layer_norm(x, self.normalized_shape, self.weight, None, self.eps)
        return out + _broadcast(rows, out)


_TASK_CLASSES = {nn.Linear: TaskLinear, nn.LayerNorm: TaskLayerNorm}


def install_task_layers(model: nn.Module) -> list[str]:
    """Re-class every biased Linear/LayerNorm; return the bias names that can vary per task."""
    names = []
    for module_name, module in model.named_modules():
        task_class = _TASK_CLASSES.get(type(module))
        if isinstance(module, (TaskLinear, TaskLayerNorm)):
            task_class = type(module)
        if task_class is None or getattr(module, "bias", None) is None:
            continue
        module.__class__ = task_class
        module.bias_name = f"{module_name}.bias" if module_name else "bias"
        names.append(module.bias_name)
    return names
