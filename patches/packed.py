"""A padding-free forward of a BERT-style encoder: every Linear/LayerNorm sees only real tokens.

A server batch mixes lengths, so a padded (B, T) forward spends part of its matrix work on pad
tokens. Here the real tokens are packed into (N, H) for the embeddings, every Linear and
LayerNorm, and re-padded only around attention (the one step that needs rows), in groups of
rows of similar length where the batch's lengths differ enough to pay for it. Each token adds
its own row's task bias, so the result equals the padded forward of the same rows. The layer
walk mirrors transformers' BertModel/RobertaModel in eval mode (no dropout) and is used only
for models whose structure `supports_packing` recognises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .layer_breaks import layer_done


@dataclass(frozen=True)
class RowTasks:
    """The batch's U distinct tasks: their biases, and which of them each row serves."""

    bias_of: Callable[[str], torch.Tensor]  # bias name -> (U, dim)
    row_task: torch.Tensor  # (B,) values in [0, U)
    count: int  # U


class _TokenBiases:
    """Adds each packed token's task bias to a layer output, and runs the walk's Linear
    products (through its kernel).

    One task: the (dim,) bias goes into the fused op. Several: `out += onehot @ table`, a
    (N, U) x (U, dim) product accumulated in place; gathering an (N, dim) bias per layer
    instead cost up to 75% more per Linear in float32.
    """

    def __init__(
        self,
        tasks: RowTasks,
        token_row: torch.Tensor,
        dtype: torch.dtype,
        linear: LinearKernel | None = None,
    ):
        self.tasks = tasks
        self.linear = linear or PLAIN_LINEAR  # the walk's matrix products
        self.onehot = None
        if tasks.count > 1:
            token_task = tasks.row_task.index_select(0, token_row)  # (N,)
            self.onehot = F.one_hot(token_task, tasks.count).to(dtype)  # (N, U)

    def shared(self, name: str) -> torch.Tensor | None:
        """The (dim,) bias when every token serves one task, else None."""
        return self.tasks.bias_of(name)[0] if self.onehot is None else None

    def add_(self, out: torch.Tensor, name: str) -> torch.Tensor:
        """out (N, dim) += each token's task bias, in place."""
        return out.addmm_(self.onehot, self.tasks.bias_of(name))


PACKABLE_TYPES = ("bert", "roberta", "xlm-roberta")
# attention runs on rows re-padded to the longest; a batch of more rows runs it in groups of
# this many rows of similar length, each padded to its own longest (B=32 GLUE batches, one
# layer: 1.41 -> 0.72 ms in float32, 1.59 -> 0.97 ms in bf16 against one group of 32 rows),
# where that leaves at most this share of the batch's padded slots (else one group is cheaper)
ATTENTION_ROWS = 8
GROUPED_SLOTS = 0.75


def supports_packing(model: nn.Module) -> bool:
    """Whether `model` is an encoder-only BERT/RoBERTa whose layers the packed walk mirrors."""
    config = model.config
    if config.model_type not in PACKABLE_TYPES or getattr(config, "is_decoder", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(config, "add_cross_attention", False) or not hasattr(model, "encoder"):
        return False
    biased = all(
        getattr(m, "bias", None) is not None
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.LayerNorm))
    )
    return biased and all(_layer_is_standard(layer) for layer in model.encoder.layer)


def _layer_is_standard(layer: nn.Module) -> bool:
    attention = getattr(layer, "attention", None)
    parts = (
        getattr(attention, "self", None),
        getattr(attention, "output", None),
        getattr(layer, "intermediate", None),
        getattr(layer, "output", None),
    )
    return all(p is not None for p in parts) and layer.chunk_size_feed_forward == 0


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a right-padded (B, T) batch sit."""

    token_index: torch.Tensor  # (N,) flat index of each real token in the B*T grid
    token_row: torch.Tensor  # (N,) row of each real token
    key_mask: torch.Tensor  # (B, 1, 1, T) True where a key is a real token
    rows: int
    length: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        rows, length = attention_mask.shape  # (B, T)
        token_index = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        return cls(token_index, token_index // length, key_mask, rows, length)

    @cached_property
    def attention_groups(self) -> list[AttentionGroup] | None:
        """Rows in groups of ATTENTION_ROWS by length, each re-padded to its own longest; None
        where one group of all rows is as good (few rows, or lengths alike)."""
        if self.rows <= ATTENTION_ROWS:
            return None
        lengths = torch.bincount(self.token_row, minlength=self.rows)  # (B,)
        by_length = lengths.argsort(stable=True)
        chunks = lengths[by_length].split(ATTENTION_ROWS)  # sorted lengths of each group
        grouped = sum(len(c) * int(c[-1]) for c in chunks)  # padded slots of the groups
        if grouped > GROUPED_SLOTS * self.rows * self.length:
            return None
        column = self.token_index % self.length  # (N,) each token's position in its row
        device, groups = self.token_row.device, []
        for rows in by_length.split(ATTENTION_ROWS):
            rows = rows.sort().values  # (b,) in batch order, so tokens stay in packed order
            local = torch.full((self.rows,), -1, dtype=torch.long, device=device)
            local[rows] = torch.arange(len(rows), device=device)
            tokens = (local[self.token_row] >= 0).nonzero().squeeze(1)  # (n,)
            length = int(lengths[rows].max())
            slots = local[self.token_row[tokens]] * length + column[tokens]  # (n,)
            mask = torch.arange(length, device=device) < lengths[rows, None]  # (b, length)
            groups.append(AttentionGroup(tokens, slots, mask[:, None, None, :], len(rows), length))
        return groups

    def pack(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)."""
        return grid.reshape(self.rows * self.length, *grid.shape[2:])[self.token_index]

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, T, D) with zeros at pad positions."""
        grid = tokens.new_zeros(self.rows * self.length, tokens.shape[-1])  # (B*T, D)
        grid[self.token_index] = tokens
        return grid.view(self.rows, self.length, -1)


@dataclass(frozen=True)
class AttentionGroup:
    """Some rows of a batch, re-padded together for attention."""

    tokens: torch.Tensor  # (n,) packed index of each of their tokens, in packed order
    slots: torch.Tensor  # (n,) flat index of each in the group's (rows, length) grid
    key_mask: torch.Tensor  # (rows, 1, 1, length) True where a key is a real token
    rows: int
    length: int


class LinearKernel(Protocol):
    """x @ W.T (+ bias) for one of the model's Linear modules: (N, in) -> (N, out)."""

    name: str

    def __call__(self, x: torch.Tensor, module: nn.Linear, bias: torch.Tensor | None): ...


class PlainLinear:
    """F.linear on the module's own weight."""

    name = "aten"

    def __call__(self, x, module, bias):
        return F.linear(x, module.weight, bias)


PLAIN_LINEAR = PlainLinear()


def packed_forward(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    tasks: RowTasks,
    linear: LinearKernel = PLAIN_LINEAR,
) -> BaseModelOutputWithPooling:
    """The model's output for a right-padded batch, computed without pad tokens; every Linear
    through `linear`."""
    packing = Packing.of(batch["attention_mask"])
    biases = _TokenBiases(tasks, packing.token_row, model.dtype, linear)
    hidden = _embed(model.embeddings, batch, packing, biases)  # (N, H)
    for i, layer in enumerate(model.encoder.layer):
        if i:
            layer_done()  # other work of this thread may run here (layer_breaks.py)
        hidden = _layer(layer, hidden, packing, biases)  # (N, H)
    last = packing.unpack(hidden)  # (B, T, H)
    pooled = None
    if getattr(model, "pooler", None) is not None:
        rows = torch.arange(packing.rows, device=last.device)
        row_biases = _TokenBiases(tasks, rows, last.dtype, linear)
        pooled = torch.tanh(_linear(last[:, 0], model.pooler.dense, row_biases))  # (B, H)
    return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled)


def _embed(embeddings: nn.Module, batch, packing: Packing, biases: _TokenBiases):
    """Word + position + token-type embeddings and LayerNorm of the real tokens: (N, H)."""
    input_ids = batch["input_ids"]  # (B, T)
    positions = _position_ids(embeddings, input_ids)  # (B, T)
    types = batch.get("token_type_ids")
    if types is None:
        types = torch.zeros_like(input_ids)
    vectors = (
        embeddings.word_embeddings(packing.pack(input_ids))
        + embeddings.token_type_embeddings(packing.pack(types))
        + embeddings.position_embeddings(packing.pack(positions))
    )  # (N, H)
    return _layer_norm(vectors, embeddings.LayerNorm, biases)


def _position_ids(embeddings: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids exactly as the model's own embeddings would make them."""
    padding_idx = getattr(embeddings, "padding_idx", None)
    if padding_idx is not None:  # RoBERTa: count real tokens from padding_idx + 1
        real = input_ids.ne(padding_idx).int()
        return (torch.cumsum(real, dim=1) * real).long() + padding_idx
    return embeddings.position_ids[:, : input_ids.shape[1]].expand_as(input_ids)


def _layer(layer: nn.Module, hidden: torch.Tensor, packing: Packing, biases: _TokenBiases):
    """One transformer layer on packed tokens: (N, H) -> (N, H)."""
    attention = layer.attention
    context = _attend(attention.self, hidden, packing, biases)  # (N, H)
    out = _linear(context, attention.output.dense, biases)
    hidden = _layer_norm(out + hidden, attention.output.LayerNorm, biases)
    layer_done()  # and between its attention and its feed-forward
    inner = layer.intermediate.intermediate_act_fn(
        _linear(hidden, layer.intermediate.dense, biases)
    )  # (N, I)
    out = _linear(inner, layer.output.dense, biases)
    return _layer_norm(out + hidden, layer.output.LayerNorm, biases)


def _attend(self_attention: nn.Module, hidden, packing: Packing, biases: _TokenBiases):
    """Multi-head self-attention: projections packed, attention over re-padded rows."""
    heads = self_attention.num_attention_heads
    qkv = torch.cat(
        [
            _linear(hidden, self_attention.query, biases),
            _linear(hidden, self_attention.key, biases),
            _linear(hidden, self_attention.value, biases),
        ],
        dim=-1,
    )  # (N, 3H)
    scale = self_attention.scaling
    groups = packing.attention_groups
    if groups is None:
        grid = packing.unpack(qkv)  # (B, T, 3H)
        return packing.pack(_attention(grid, packing.key_mask, heads, scale))  # (N, H)
    context = qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3)  # (N, H)
    for group in groups:
        grid = qkv.new_zeros(group.rows * group.length, qkv.shape[1])  # (b*t, 3H)
        grid[group.slots] = qkv.index_select(0, group.tokens)
        grid = grid.view(group.rows, group.length, -1)  # (b, t, 3H)
        out = _attention(grid, group.key_mask, heads, scale)  # (b, t, H)
        context.index_copy_(0, group.tokens, out.reshape(-1, out.shape[-1])[group.slots])
    return context


def _attention(grid: torch.Tensor, key_mask: torch.Tensor, heads: int, scale: float):
    """Self-attention of re-padded rows: (b, t, 3H) -> (b, t, H), pad keys masked."""
    rows, length, width = grid.shape
    q, k, v = grid.view(rows, length, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)
    return context.transpose(1, 2).reshape(rows, length, -1)  # (b, t, H)


def _linear(x: torch.Tensor, module: nn.Linear, biases: _TokenBiases) -> torch.Tensor:
    """x @ W.T plus the task bias of each token (or row): (N, in) -> (N, out)."""
    shared = biases.shared(module.bias_name)
    if shared is not None:
        return biases.linear(x, module, shared)
    return biases.add_(biases.linear(x, module, None), module.bias_name)


def _layer_norm(x: torch.Tensor, module: nn.LayerNorm, biases: _TokenBiases) -> torch.Tensor:
    """LayerNorm with the task shift of each token: (N, H) -> (N, H)."""
    shared = biases.shared(module.bias_name)
    out = F.layer_norm(x, module.normalized_shape, module.weight, shared, module.eps)
    return out if shared is not None else biases.add_(out, module.bias_name)
