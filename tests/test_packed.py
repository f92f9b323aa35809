"""The padding-free forward against plain transformers, row by row, for BERT and RoBERTa."""

from __future__ import annotations

import copy

import pytest
import torch

from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.packed import (
    ATTENTION_ROWS,
    Packing,
    RowTasks,
    packed_forward,
    supports_packing,
)
from bitpatch.patches.task_layers import install_task_layers

from tiny import make_model

TEXTS = ["a b", "one two three four five six seven eight", ["a pair", "of texts here"], "x"]


def shifted(model, seed: int):
    """A copy of `model` with every bias moved: what a second task's patch would serve."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in other.named_parameters():
            if name.endswith("bias"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return other


@pytest.mark.parametrize("copies", [1, 5])  # 4 rows: one attention group; 20 rows: three
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_each_row_equals_the_plain_forward_of_its_task(family, copies):
    base, tokenizer = make_model(family)
    other = shifted(base, seed=1)
    texts = TEXTS * copies
    batch = collate(encode_inputs(tokenizer, texts, 32), tokenizer.pad_token_id)  # (B, T)
    assert (Packing.of(batch["attention_mask"]).attention_groups is None) == (copies == 1)
    with torch.no_grad():
        want = [base(**batch), other(**batch)]
    patched = copy.deepcopy(base)
    names = install_task_layers(patched)
    assert supports_packing(patched)
    tables = {n: torch.stack([dict(m.named_parameters())[n] for m in (base, other)]) for n in names}
    row_task = torch.tensor([0, 1, 1, 0] * copies)  # (B,)
    with torch.no_grad():
        got = packed_forward(patched, batch, RowTasks(tables.__getitem__, row_task, 2))
    mask = batch["attention_mask"].bool()  # (B, T)
    for row, task in enumerate(row_task.tolist()):
        real = mask[row]
        torch.testing.assert_close(
            got.last_hidden_state[row][real],
            want[task].last_hidden_state[row][real],
            atol=1e-5,
            rtol=1e-5,
        )
        assert not got.last_hidden_state[row][~real].any()  # pads stay zero
        torch.testing.assert_close(
            got.pooler_output[row], want[task].pooler_output[row], atol=1e-5, rtol=1e-5
        )


def test_packing_round_trip():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])  # (B, T)
    packing = Packing.of(mask)
    grid = torch.arange(9.0).view(3, 3, 1)  # (B, T, 1)
    tokens = packing.pack(grid)  # (N, 1)
    assert tokens.squeeze(1).tolist() == [0.0, 1.0, 3.0, 6.0, 7.0, 8.0]
    assert packing.token_row.tolist() == [0, 0, 1, 2, 2, 2]
    assert torch.equal(packing.unpack(tokens), grid * mask.unsqueeze(-1))


def test_attention_groups_hold_rows_of_similar_length_each_padded_to_its_longest():
    lengths = torch.tensor([5, 1, 9, 2, 7, 3, 8, 4, 6, 10, 2, 3, 1, 9, 4, 5, 7, 6])  # 18 rows
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()  # (B, T)
    packing = Packing.of(mask)
    groups = packing.attention_groups
    assert [g.rows for g in groups] == [ATTENTION_ROWS, ATTENTION_ROWS, 18 - 2 * ATTENTION_ROWS]
    alike = Packing.of(torch.ones(18, 10, dtype=torch.long))  # rows of one length
    assert alike.attention_groups is None and Packing.of(mask[:8]).attention_groups is None
    tokens = torch.cat([g.tokens for g in groups])
    assert sorted(tokens.tolist()) == list(range(int(lengths.sum())))  # each token once
    longest = [int(lengths[packing.token_row[g.tokens]].max()) for g in groups]
    assert [g.length for g in groups] == longest == sorted(longest)
    for g in groups:
        assert torch.equal(g.tokens, g.tokens.sort().values)  # packed order within a group
        assert int(g.key_mask.sum()) == len(g.tokens) == len(set(g.slots.tolist()))
