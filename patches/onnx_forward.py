"""The packed multi-task forward run by ONNX Runtime on the CPU (the graph of `onnx_graph.py`).

Built once per backbone; the optimized graph is cached on disk (see `ForwardCache`), so a
second start loads it instead of building and optimizing again. One session per CPU thread
count a forward asks for (`torch.get_num_threads()` on the calling thread, made on first use:
the server's warm-up runs both of its counts), so the batcher's per-worker and widened lone
forwards keep working as they do for the eager walk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .forward_cache import ForwardCache
from .onnx_graph import build_graph
from .packed import Packing, _position_ids

log = logging.getLogger(__name__)


def runtime_version() -> str | None:
    """ONNX Runtime's version, or None where it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


class OnnxForward:
    """Runs padded batches packed through one ONNX Runtime graph: `(inputs, table, row_task)`
    -> the backbone's output, as `packed_forward` computes it."""

    name = "onnxruntime"
    kernel = "onnxruntime"
    yields = False  # one graph call: no layer breaks

    def __init__(self, model: nn.Module, slices: Mapping[str, slice], cache: ForwardCache):
        import onnxruntime

        self._ort = onnxruntime
        self.has_pooler = getattr(model, "pooler", None) is not None
        self._embeddings = model.embeddings
        self._path = self._optimized_graph(model, slices, cache)
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def _optimized_graph(self, model, slices, cache: ForwardCache) -> Path:
        """The optimized graph's file: from the cache, or built, optimized and cached now."""
        cached = cache.lookup("model.onnx")
        if cached is not None:
            log.info("event=forward_cache_hit backend=onnxruntime path=%s", cached)
            return cached
        started = time.perf_counter()
        raw = cache.scratch("raw.onnx")
        raw.write_bytes(build_graph(model, slices).SerializeToString())
        options = self._options(1)
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(cache.scratch("model.onnx"))
        self._ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        raw.unlink()
        path = cache.commit("model.onnx")
        log.info(
            "event=forward_built backend=onnxruntime seconds=%.1f path=%s",
            time.perf_counter() - started,
            path,
        )
        return path

    def _options(self, threads: int):
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        return options

    def session(self, threads: int):
        """The session whose forwards use `threads` CPU threads (made on first use)."""
        with self._lock:
            session = self._sessions.get(threads)
            if session is None:
                options = self._options(threads)
                # the cached graph is optimized already: loading it skips that work
                options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                session = self._ort.InferenceSession(
                    str(self._path), options, providers=["CPUExecutionProvider"]
                )
                self._sessions[threads] = session
            return session

    def __call__(
        self, inputs: Mapping[str, torch.Tensor], table: torch.Tensor, row_task: torch.Tensor
    ) -> BaseModelOutputWithPooling:
        """The backbone's output for a right-padded batch; row i uses table[row_task[i]]."""
        packing = Packing.of(inputs["attention_mask"])
        names = ["hidden", "pooled"] if self.has_pooler else ["hidden"]
        feeds = self._feeds(inputs, packing, table, row_task)
        outputs = self.session(torch.get_num_threads()).run(names, feeds)
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
