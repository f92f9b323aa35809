"""The packed multi-task walk of a BERT-style encoder as a chain of ONNX graphs.

Weights are initializers; everything that varies per batch is a graph input: the packed tokens,
where they sit in the (B, T) grid, each token's and row's task, and the batch's (U, total) bias
table. So one graph, built once per backbone, serves every mix of tasks, and ONNX Runtime runs
the ops around the matrix products (attention, LayerNorm, GELU) as fused kernels where eager
PyTorch dispatches them one by one; attention is its `com.microsoft.MultiHeadAttention`, so the
graph is for ONNX Runtime only. The walk is the one of `packed.py`: the same inputs give the same
outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from onnx import ModelProto, TensorProto, helper, numpy_helper
from torch import nn

OPSET = 20  # Gelu (opset 20), LayerNormalization (17)
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "relu": None}

# graph inputs: (name, element type, shape); N packed tokens, B rows, T padded length, U tasks
INPUTS = (
    ("input_ids", TensorProto.INT64, ["N"]),
    ("token_type_ids", TensorProto.INT64, ["N"]),
    ("position_ids", TensorProto.INT64, ["N"]),
    ("token_task", TensorProto.INT64, ["N"]),  # each token's row of `bias_table`
    ("row_task", TensorProto.INT64, ["B"]),  # each row's row of `bias_table`
    ("first_token", TensorProto.INT64, ["B"]),  # packed index of each row's first token
    ("grid_index", TensorProto.INT64, ["B", "T"]),  # packed index of each grid slot (pads: 0)
    ("token_slot", TensorProto.INT64, ["N"]),  # flat B*T slot of each packed token
    ("key_mask", TensorProto.INT32, ["B", "T"]),  # 1 for real keys, 0 for pads
    ("bias_table", TensorProto.FLOAT, ["U", "total"]),  # each task's flat bias vector
)


HIDDEN_IN = "hidden_in"  # (N, H) the previous segment's output


class UnsupportedGraph(ValueError):
    """The backbone has a part this graph does not express (the eager walk still serves it)."""


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, slices: Mapping[str, slice]):
        self.nodes: list = []
        self.weights: list = []
        self.slices = slices
        self._count = 0

    def name(self, hint: str) -> str:
        """A fresh tensor name."""
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs) -> str:
        """Add one node; the name of its (single) output."""
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, value: np.ndarray | torch.Tensor, hint: str) -> str:
        """Add an initializer (float32 for tensors); its name."""
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float32).numpy()
        name = self.name(hint)
        self.weights.append(numpy_helper.from_array(np.require(value, requirements="C"), name))
        return name

    def ints(self, values: list[int], hint: str = "ints") -> str:
        """An int64 vector initializer (shapes, slice bounds)."""
        return self.const(np.array(values, dtype=np.int64), hint)

    def task_bias(self, names: list[str], index: str) -> str:
        """(len(index), sum of dims): the listed biases of each index's task, side by side."""
        starts = [self.slices[n].start for n in names]
        stops = [self.slices[n].stop for n in names]
        if any(a != b for a, b in zip(stops, starts[1:], strict=False)):
            raise UnsupportedGraph(f"biases {names} are not adjacent in the task vector")
        cols = self.op(
            "Slice",
            ["bias_table", self.ints([starts[0]]), self.ints([stops[-1]]), self.ints([1])],
            "bias_cols",
        )  # (U, dims)
        return self.op("Gather", [cols, index], "task_bias", axis=0)

    def linear(self, x: str, modules: list[nn.Linear], index: str = "token_task") -> str:
        """x @ W.T plus each token's task bias; several modules side by side (fused QKV)."""
        weight = torch.cat([m.weight for m in modules], dim=0).T  # (in, sum of out)
        product = self.op("MatMul", [x, self.const(weight, "weight")], "matmul")
        bias = self.task_bias([m.bias_name for m in modules], index)
        return self.op("Add", [product, bias], "linear")

    def layer_norm(self, x: str, module: nn.LayerNorm) -> str:
        """LayerNorm with each token's task shift: (N, H) -> (N, H)."""
        scale = self.const(module.weight, "ln_scale")
        zero = self.const(torch.zeros_like(module.weight), "ln_zero")
        normed = self.op(
            "LayerNormalization", [x, scale, zero], "ln", axis=-1, epsilon=float(module.eps)
        )
        return self.op("Add", [normed, self.task_bias([module.bias_name], "token_task")], "ln_b")


def build_segments(
    model: nn.Module, slices: Mapping[str, slice], layers_per_segment: int | None = None
) -> list[ModelProto]:
    """The packed multi-task forward of `model` (float32 weights) as a chain of ONNX models,
    each of `layers_per_segment` layers (None: one model); the first embeds the tokens, the
    last adds the pooler (where the model has one)."""
    act = getattr(model.config, "hidden_act", None)
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise UnsupportedGraph(f"activation {act!r} (supported: {', '.join(ACTIVATIONS)})")
    layers = list(model.encoder.layer)
    step = layers_per_segment or len(layers)
    segments = []
    for first in range(0, len(layers), step):
        g = _Builder(slices)
        hidden = _embed(g, model.embeddings) if first == 0 else HIDDEN_IN  # (N, H)
        for layer in layers[first : first + step]:
            hidden = _layer(g, layer, hidden, ACTIVATIONS[act])
        last = first + step >= len(layers)
        segments.append(_segment(g, hidden, getattr(model, "pooler", None) if last else None))
    return segments


def _segment(g: _Builder, hidden: str, pooler: nn.Module | None) -> ModelProto:
    """One segment's model: the graph inputs its nodes read, `hidden` (and `pooled`) out."""
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", "H"])]
    g.nodes.append(helper.make_node("Identity", [hidden], ["hidden"]))
    if pooler is not None:
        first = g.op("Gather", [hidden, "first_token"], "first", axis=0)  # (B, H)
        dense = g.linear(first, [pooler.dense], index="row_task")
        g.nodes.append(helper.make_node("Tanh", [dense], ["pooled"]))
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["B", "H"]))
    read = {name for node in g.nodes for name in node.input}
    declared = (*INPUTS, (HIDDEN_IN, TensorProto.FLOAT, ["N", "H"]))
    inputs = [helper.make_tensor_value_info(n, t, s) for n, t, s in declared if n in read]
    graph = helper.make_graph(g.nodes, "bitpatch_packed", inputs, outputs, g.weights)
    opset = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opset, producer_name="bitpatch")


def _embed(g: _Builder, embeddings: nn.Module) -> str:
    """Word + position + token-type embeddings of the packed tokens, then LayerNorm: (N, H)."""
    parts = [
        g.op("Gather", [g.const(table.weight, "embedding"), ids], "embed", axis=0)
        for table, ids in (
            (embeddings.word_embeddings, "input_ids"),
            (embeddings.position_embeddings, "position_ids"),
            (embeddings.token_type_embeddings, "token_type_ids"),
        )
    ]
    total = g.op("Add", [g.op("Add", parts[:2], "embed_sum"), parts[2]], "embed_sum")
    return g.layer_norm(total, embeddings.LayerNorm)


def _layer(g: _Builder, layer: nn.Module, hidden: str, approximate: str | None) -> str:
    """One transformer layer on packed tokens: (N, H) -> (N, H)."""
    attention = layer.attention
    context = _attend(g, attention.self, hidden)
    out = g.linear(context, [attention.output.dense])
    hidden = g.layer_norm(g.op("Add", [out, hidden], "residual"), attention.output.LayerNorm)
    inner = g.linear(hidden, [layer.intermediate.dense])  # (N, I)
    if approximate is None:
        inner = g.op("Relu", [inner], "act")
    else:
        inner = g.op("Gelu", [inner], "act", approximate=approximate)
    out = g.linear(inner, [layer.output.dense])
    return g.layer_norm(g.op("Add", [out, hidden], "residual"), layer.output.LayerNorm)


def _attend(g: _Builder, attention: nn.Module, hidden: str) -> str:
    """Multi-head self-attention: fused QKV on packed tokens, ONNX Runtime's fused attention
    kernel on re-padded rows (pad keys masked)."""
    heads = attention.num_attention_heads
    qkv = g.linear(hidden, [attention.query, attention.key, attention.value])  # (N, 3H)
    grid = g.op("Gather", [qkv, "grid_index"], "grid", axis=0)  # (B, T, 3H)
    q, k, v = (g.name(part) for part in ("q", "k", "v"))
    g.nodes.append(helper.make_node("Split", [grid], [q, k, v], axis=2, num_outputs=3))
    context = g.op(
        "MultiHeadAttention",
        [q, k, v, "", "key_mask"],
        "attention",
        domain="com.microsoft",
        num_heads=heads,
        scale=float(attention.scaling),
    )  # (B, T, H)
    flat = g.op("Reshape", [context, g.ints([-1, attention.all_head_size])], "flat")  # (B*T, H)
    return g.op("Gather", [flat, "token_slot"], "packed", axis=0)  # (N, H)
