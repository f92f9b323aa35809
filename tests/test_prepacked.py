"""The prepacked oneDNN linear kernel: chosen by detection, the same numbers as F.linear."""

from __future__ import annotations

import logging

import pytest
import torch

from bitpatch.patches import prepacked
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.packed import PLAIN_LINEAR, RowTasks, packed_forward
from bitpatch.patches.prepacked import PrepackedLinear, linear_kernel, prepacked_unavailable
from bitpatch.patches.task_layers import install_task_layers
from bitpatch.patches.tuning import cpu_has_bf16

from tiny import make_model

native_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="the CPU has no native bf16")


def bf16_model():
    """The tiny BERT with task layers, in bf16; and its tokenizer."""
    model, tokenizer = make_model("bert")
    install_task_layers(model)
    return model.to(torch.bfloat16).eval(), tokenizer


@native_bf16
def test_a_bf16_walk_through_prepacked_weights_equals_f_linear():
    model, tokenizer = bf16_model()
    kernel = linear_kernel(model)
    assert isinstance(kernel, PrepackedLinear)
    batch = collate(encode_inputs(tokenizer, ["a b c", "one two three four", "x"], 32),
                    tokenizer.pad_token_id)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    biases = {n: p for n, p in model.named_parameters() if n.endswith("bias")}
    tables = {n: torch.stack([p, p + 0.3 * torch.randn(p.shape, generator=gen).to(p.dtype)])
              for n, p in biases.items()}  # fmt: skip
    tasks = RowTasks(tables.__getitem__, torch.tensor([0, 1, 1]), 2)  # two tasks mixed
    single = RowTasks(tables.__getitem__, torch.tensor([1, 1, 1]), 2)
    with torch.inference_mode():
        for rows in (tasks, single):
            plain = packed_forward(model, batch, rows)
            fast = packed_forward(model, batch, rows, kernel)
            for a, b in ((fast.last_hidden_state, plain.last_hidden_state),
                         (fast.pooler_output, plain.pooler_output)):  # fmt: skip
                torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=0)


def test_float32_and_cpus_without_native_bf16_keep_f_linear(monkeypatch, caplog):
    model, _ = make_model("bert")
    assert prepacked_unavailable(model) == "it is for bf16 weights on the CPU"
    assert linear_kernel(model) is PLAIN_LINEAR
    monkeypatch.setattr(prepacked, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.DEBUG, logger="bitpatch.patches.prepacked"):
        assert linear_kernel(bf16_model()[0]) is PLAIN_LINEAR
    assert "reason=the CPU has no native bf16" in caplog.text
