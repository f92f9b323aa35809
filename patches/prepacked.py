"""Linear products on weights reordered once into oneDNN's blocked layout (bf16 on the CPU).

An eager bf16 `F.linear` on the CPU hands oneDNN the plain weight, which it reorders into its
blocked (AMX / AVX-512 BF16) layout on every call: for a short batch the reorder costs as much
as the product. Reordering each Linear's weight once at start and calling oneDNN's linear on
it (the ops torch.compile's CPU backend uses) gives the same numbers, a single-task batch
1.12x faster on an Intel Xeon with AMX (bench micro). Chosen by detection: bf16 weights, a CPU
with native bf16, a torch built with oneDNN and those ops; anything else keeps `F.linear`. The
reordered weights are a second copy of the Linear weights (~21 MB on the default backbone); the
backbone's weights are frozen, so the copy never goes stale.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .packed import PLAIN_LINEAR, LinearKernel
from .tuning import cpu_has_bf16

log = logging.getLogger(__name__)
ONEDNN_OPS = ("_reorder_linear_weight", "_linear_pointwise")


class PrepackedLinear:
    """oneDNN's linear on each module's weight, reordered once (the module keeps its own)."""

    name = "onednn_prepacked"

    def __init__(self, model: nn.Module):
        reorder = torch.ops.mkldnn._reorder_linear_weight
        self.weights = {
            id(m): reorder(m.weight.detach(), None)
            for m in model.modules()
            if isinstance(m, nn.Linear)
        }

    def __call__(self, x, module, bias):
        return torch.ops.mkldnn._linear_pointwise(x, self.weights[id(module)], bias, "none", [], "")


def prepacked_unavailable(model: nn.Module) -> str | None:
    """Why the prepacked kernel does not serve `model` here, or None when it does."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.bfloat16:
        return "it is for bf16 weights on the CPU"
    if not cpu_has_bf16():
        return "the CPU has no native bf16"
    if not torch.backends.mkldnn.is_available():
        return "torch is built without oneDNN"
    if not all(
        hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
    ):
        return "this torch lacks oneDNN's linear ops"
    return None


def linear_kernel(model: nn.Module) -> LinearKernel:
    """The prepacked kernel where it serves and gives F.linear's numbers, else F.linear."""
    reason = prepacked_unavailable(model)
    if reason is None:
        try:
            kernel = PrepackedLinear(model)
            reason = _differs(kernel, model)
        except RuntimeError as err:
            reason = f"oneDNN refused it: {err}"
        if reason is None:
            log.info("event=linear_kernel kernel=%s", kernel.name)
            return kernel
    log.debug("event=linear_kernel kernel=%s reason=%s", PLAIN_LINEAR.name, reason)
    return PLAIN_LINEAR


def _differs(kernel: PrepackedLinear, model: nn.Module) -> str | None:
    """Why the kernel's product of one Linear differs from F.linear's, or None."""
    module = next(m for m in model.modules() if isinstance(m, nn.Linear))
    x = torch.randn(3, module.in_features, dtype=module.weight.dtype)  # (3, in)
    with torch.inference_mode():
        want = PLAIN_LINEAR(x, module, module.bias)
        got = kernel(x, module, module.bias)
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=1e-2):
        return "its product differs from F.linear's"
    return None
