"""The packed multi-task forward run by ONNX Runtime on the CPU (the graphs of `onnx_graph.py`).

Built once per backbone, whole and as a chain of one graph per layer; the optimized graphs are
cached on disk (see `ForwardCache`), so a second start loads them instead of building and
optimizing again. A forward of more than SHORT_TOKENS real tokens on a thread that wants layer
breaks (a server worker's, `layer_breaks.py`) runs the chain, calling `layer_done()` between
two layers as the eager walk does; every other forward runs the whole graph in one call. One
set of sessions per form and CPU thread count a forward asks for (`torch.get_num_threads()`
on the calling thread, made on first use), so the batcher's per-worker and widened lone
forwards keep working as they do for the eager walk. Every session allocates from one shared
arena: with an arena per session the chain ran up to 1.16x the whole graph's time on one
thread, with the shared one 0.95-1.03x.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .forward_cache import ForwardCache
from .layer_breaks import breaks_wanted, layer_done
from .onnx_graph import HIDDEN_IN, build_segments
from .packed import Packing, _position_ids

log = logging.getLogger(__name__)

WHOLE = "model.onnx"
# a forward of at most this many real tokens runs the whole graph even where breaks are wanted:
# it ends before a break would help (~36 ms on one thread of an Intel Xeon, bench micro)
SHORT_TOKENS = 128
_shared_arena = threading.Lock()  # held while the process's shared arena is registered
_arena_registered = False


def runtime_version() -> str | None:
    """ONNX Runtime's version, or None where it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _register_shared_arena(ort) -> None:
    """Register one CPU arena for every session of this process that asks for it (once)."""
    global _arena_registered
    with _shared_arena:
        if not _arena_registered:
            memory = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(memory, None)
            _arena_registered = True


@dataclass(frozen=True)
class _Segment:
    """One graph's session and the names it reads and writes."""

    session: object
    inputs: tuple[str, ...]
    outputs: list[str]


class OnnxForward:
    """Runs padded batches packed through ONNX Runtime graphs: `(inputs, table, row_task)` ->
    the backbone's output, as `packed_forward` computes it."""

    name = "onnxruntime"
    kernel = "onnxruntime"
    yields = True  # its chain breaks between layers

    def __init__(self, model: nn.Module, slices: Mapping[str, slice], cache: ForwardCache):
        import onnxruntime

        self._ort = onnxruntime
        _register_shared_arena(onnxruntime)
        self.has_pooler = getattr(model, "pooler", None) is not None
        self._embeddings = model.embeddings
        layers = [f"layer{i:02d}.onnx" for i in range(len(model.encoder.layer))]
        self._files = {False: [WHOLE], True: layers}  # chained? -> its graphs in order
        self._folder = self._optimized_graphs(model, slices, cache)
        self._sessions: dict[tuple[int, bool], list[_Segment]] = {}
        self._lock = threading.Lock()

    def _optimized_graphs(self, model, slices, cache: ForwardCache) -> Path:
        """The folder of the optimized graphs: from the cache, or built, optimized and cached."""
        names = [name for files in self._files.values() for name in files]
        if all(cache.lookup(name) for name in names):
            log.info("event=forward_cache_hit backend=onnxruntime path=%s", cache.entry)
            return cache.entry
        started = time.perf_counter()
        graphs = build_segments(model, slices) + build_segments(model, slices, 1)
        for name, graph in zip(names, graphs, strict=True):
            raw = cache.scratch(f"raw-{name}")
            raw.write_bytes(graph.SerializeToString())
            options = self._options(1)
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = str(cache.scratch(name))
            self._ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
            raw.unlink()
        folder = cache.commit(WHOLE).parent
        log.info(
            "event=forward_built backend=onnxruntime seconds=%.1f graphs=%d path=%s",
            time.perf_counter() - started,
            len(names),
            folder,
        )
        return folder

    def _options(self, threads: int, chained: bool = False):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.add_session_config_entry("session.use_env_allocators", "1")
        if chained and threads > 1:  # the idle pools of the chain's other sessions must not
            # spin against the running one's (a 2-thread chain ran 3-6x slower)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def segments(self, threads: int, chained: bool) -> list[_Segment]:
        """The sessions a forward on `threads` CPU threads runs in turn (made on first use)."""
        with self._lock:
            segments = self._sessions.get((threads, chained))
            if segments is None:
                segments = [self._segment(name, threads, chained) for name in self._files[chained]]
                self._sessions[threads, chained] = segments
            return segments

    def _segment(self, name: str, threads: int, chained: bool) -> _Segment:
        options = self._options(threads, chained)
        # the cached graph is optimized already: loading it skips that work
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = self._ort.InferenceSession(
            str(self._folder / name), options, providers=["CPUExecutionProvider"]
        )
        inputs = tuple(i.name for i in session.get_inputs())
        return _Segment(session, inputs, [o.name for o in session.get_outputs()])

    def __call__(
        self, inputs: Mapping[str, torch.Tensor], table: torch.Tensor, row_task: torch.Tensor
    ) -> BaseModelOutputWithPooling:
        """The backbone's output for a right-padded batch; row i uses table[row_task[i]]."""
        packing = Packing.of(inputs["attention_mask"])
        feeds = self._feeds(inputs, packing, table, row_task)
        chained = breaks_wanted() and len(packing.token_index) > SHORT_TOKENS
        for i, segment in enumerate(self.segments(torch.get_num_threads(), chained)):
            if i:
                layer_done()  # other work of this thread may run here (layer_breaks.py)
            outputs = segment.session.run(
                segment.outputs, {name: feeds[name] for name in segment.inputs}
            )
            feeds[HIDDEN_IN] = outputs[0]  # (N, H)
        last = packing.unpack(torch.from_numpy(outputs[0]))  # (B, T, H)
        pooled = torch.from_numpy(outputs[1]) if self.has_pooler else None  # (B, H)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled)

    def _feeds(self, inputs, packing: Packing, table: torch.Tensor, row_task: torch.Tensor):
        """The graph's inputs for one padded batch, as contiguous numpy arrays."""
        mask = inputs["attention_mask"]  # (B, T)
        ids = inputs["input_ids"]
        types = inputs.get("token_type_ids")
        if types is None:
            types = torch.zeros_like(ids)
        positions = _position_ids(self._embeddings, ids)  # (B, T)
        token_index = packing.token_index  # (N,)
        grid_index = torch.zeros(packing.rows * packing.length, dtype=torch.int64)
        grid_index[token_index] = torch.arange(len(token_index))
        lengths = mask.sum(1)  # (B,)
        row_task = row_task.to(torch.int64)
        feeds = {
            "input_ids": packing.pack(ids),
            "token_type_ids": packing.pack(types),
            "position_ids": packing.pack(positions),
            "token_task": row_task.index_select(0, packing.token_row),  # (N,)
            "row_task": row_task,
            "first_token": torch.cumsum(lengths, 0) - lengths,  # (B,)
            "grid_index": grid_index.view(packing.rows, packing.length),
            "token_slot": token_index,
            "key_mask": mask.to(torch.int32),
            "bias_table": table.to(torch.float32),
        }
        return {k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items()}
