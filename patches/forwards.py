"""The backbone forwards an engine can run, and the choice among them for this host.

Every forward takes a right-padded batch, the batch's (U, total) bias table and each row's
task (its row of the table), and returns the backbone's output with every row computed under
its own task's biases:

- `onnxruntime`: the packed walk as ONNX Runtime graphs (CPU, float32; `onnx_forward.py`): one
  whole graph, or one graph per layer with layer breaks for a server worker's long forwards;
- `hybrid`: that graph for a batch of at most SMALL_TOKENS real tokens, the eager packed walk
  for a larger one (on an Intel CPU each is the faster of the two there);
- `packed`: the eager padding-free walk (`packed.py`; BERT/RoBERTa);
- `padded`: the transformers model itself with per-row biases (any architecture).

`auto` picks from what it detects, never by a benchmark at start: wherever ONNX Runtime serves
(a float32 backbone on the CPU, a packable architecture, the runtime installed), `onnxruntime`,
or `hybrid` on Intel CPUs (where torch's MKL GEMMs outrun ONNX Runtime's on larger batches);
else the eager packed walk, else the padded one. The choice and its reason are logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .backbone import Backbone
from .forward_cache import ForwardCache, default_cache_root
from .packed import PACKABLE_TYPES, RowTasks, packed_forward, supports_packing
from .prepacked import linear_kernel
from .task_layers import row_biases
from .tuning import cpu_vendor

log = logging.getLogger(__name__)

FORWARDS = ("auto", "onnxruntime", "hybrid", "packed", "padded")
# a hybrid forward's batches of at most this many real tokens run through ONNX Runtime: on an
# Intel Xeon (float32, one thread, 16 tasks) the graph takes 0.65x the eager walk's time at 19
# real tokens, 0.89x at 69, 0.99x at 141, 1.20x at 253 (bench micro, docs/BENCHMARKS.md)
SMALL_TOKENS = 128
GRAPH_VERSION = 2  # bump when onnx_graph.py changes what it builds: old cache entries go unused


class BackboneForward(Protocol):
    """One forward of a padded batch, row i under the biases table[row_task[i]]."""

    name: str
    kernel: str  # what runs its matrix products
    yields: bool  # whether it calls layer_breaks.layer_done() between layers

    def __call__(
        self, inputs: Mapping[str, torch.Tensor], table: torch.Tensor, row_task: torch.Tensor
    ) -> BaseModelOutputWithPooling: ...


class _Eager:
    """An eager walk: the model's own modules."""

    kernel = "aten"
    yields = False

    def __init__(self, model: nn.Module, slices: Mapping[str, slice]):
        self.model, self.slices = model, slices


class PackedForward(_Eager):
    """The eager padding-free walk, its Linear products through the fastest kernel this host
    and dtype support (`prepacked.py`)."""

    name = "packed"
    yields = True

    def __init__(self, model: nn.Module, slices: Mapping[str, slice]):
        super().__init__(model, slices)
        self.linear = linear_kernel(model)
        self.kernel = self.linear.name

    def __call__(self, inputs, table, row_task) -> BaseModelOutputWithPooling:
        tasks = RowTasks(lambda name: table[:, self.slices[name]], row_task, len(table))
        return packed_forward(self.model, inputs, tasks, self.linear)


class PaddedForward(_Eager):
    """The transformers model's own forward, each Linear/LayerNorm adding its row's bias."""

    name = "padded"

    def __call__(self, inputs, table, row_task) -> BaseModelOutputWithPooling:
        rows = table.index_select(0, row_task)  # (B, total)
        with row_biases({n: rows[:, s] for n, s in self.slices.items()}):  # (B, dim) views
            return self.model(**inputs)


class HybridForward:
    """Few real tokens through ONNX Runtime's graph, more through the eager packed walk: the
    graph's one call beats the walk's ~200 ops on short batches, MKL's GEMMs win on long ones."""

    name = "hybrid"
    yields = True  # its large forwards break between layers; its small ones are short

    def __init__(self, small: BackboneForward, large: BackboneForward, small_tokens: int):
        self.small, self.large, self.small_tokens = small, large, small_tokens
        self.kernel = f"{small.kernel}+{large.kernel}"

    def __call__(self, inputs, table, row_task) -> BaseModelOutputWithPooling:
        tokens = int(inputs["attention_mask"].sum())
        forward = self.small if tokens <= self.small_tokens else self.large
        return forward(inputs, table, row_task)


def onnx_unavailable(backbone: Backbone) -> str | None:
    """Why the ONNX Runtime forward cannot serve this backbone here, or None when it can."""
    if backbone.device.type != "cpu":
        return f"the backbone runs on {backbone.device} (the onnxruntime forward is CPU-only)"
    if backbone.dtype != torch.float32:
        dtype = str(backbone.dtype).removeprefix("torch.")
        return f"the backbone runs in {dtype} (the onnxruntime forward is float32)"
    if not supports_packing(backbone.model):
        return f"the architecture {backbone.model.config.model_type!r} is not packable"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (pip install onnx onnxruntime)"
    return None


def onnx_choice_here() -> tuple[str, str]:
    """Which ONNX Runtime forward serves best on this CPU (onnxruntime or hybrid), and why.

    Measured (bench micro and bench server, docs/BENCHMARKS.md): on AMD EPYCs ONNX Runtime's
    MLAS GEMMs beat torch's at every batch (1.14x the eager walk with AVX2 only, 1.48x with
    AVX-512, B=32); on an Intel Xeon torch's MKL GEMMs win on long batches (ONNX Runtime 0.78x
    the eager walk at B=32) and the graph on short ones (1.5x as fast for one row; the hybrid
    server answers a lone request 2.7x sooner than the eager one).
    """
    if cpu_vendor() == "GenuineIntel":
        return "hybrid", (
            f"on an Intel CPU ONNX Runtime is faster up to {SMALL_TOKENS} tokens a batch, "
            "torch's MKL GEMMs above"
        )
    return "onnxruntime", "ONNX Runtime's GEMMs outrun torch's on this CPU"


def onnx_forward(backbone: Backbone, slices: Mapping[str, slice], cache_root: Path | None):
    """The ONNX Runtime forward of `backbone`, its graph from the cache or built now."""
    import onnx
    import onnxruntime

    from .onnx_forward import OnnxForward

    key = "-".join(
        (
            f"onnxruntime{onnxruntime.__version__}",
            f"onnx{onnx.__version__}",
            "float32",
            torch.backends.cpu.get_cpu_capability().lower(),  # the graph is optimized for it
            backbone.spec.sha256[:16],
            f"g{GRAPH_VERSION}",
        )
    )
    cache = ForwardCache(cache_root or default_cache_root(), key)
    return OnnxForward(backbone.model, slices, cache)


def choose_forward(
    requested: str, backbone: Backbone, slices: Mapping[str, slice], cache_root: Path | None
) -> BackboneForward:
    """The forward `requested` names (ValueError when it cannot serve this backbone), or for
    `auto` the fastest this host and backbone support."""
    if requested not in FORWARDS:
        raise ValueError(f"forward must be one of {', '.join(FORWARDS)}; got {requested!r}")
    model = backbone.model
    if requested == "padded":
        return PaddedForward(model, slices)
    if requested == "packed":
        if not supports_packing(model):
            raise ValueError(
                f"packed forwards support {', '.join(PACKABLE_TYPES)} encoders; this "
                f"backbone is {model.config.model_type!r}"
            )
        return PackedForward(model, slices)
    reason = onnx_unavailable(backbone)
    if requested != "auto" and reason:
        raise ValueError(f"the {requested} forward cannot serve this backbone: {reason}")
    if reason is None:
        wanted, why = (requested, "forced") if requested != "auto" else onnx_choice_here()
        try:
            graph = onnx_forward(backbone, slices, cache_root)
        except Exception as err:  # an unsupported part or a runtime error: eager still serves
            if requested != "auto":
                raise ValueError(f"the {requested} forward failed to build: {err}") from err
            reason = f"building it failed: {err}"
        else:
            if wanted == "hybrid":
                graph = HybridForward(graph, PackedForward(model, slices), SMALL_TOKENS)
            log.info("event=forward_chosen forward=%s reason=%s", graph.name, why)
            return graph
    eager = PackedForward if supports_packing(model) else PaddedForward
    chosen = eager(model, slices)
    log.info(
        "event=forward_fallback forward=%s instead_of=onnxruntime reason=%s", chosen.name, reason
    )
    return chosen
