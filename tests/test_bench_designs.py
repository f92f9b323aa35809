"""The benchmark's alternative designs compute what the engine computes, for every kind."""

from __future__ import annotations

import pytest
import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine

from bench.designs import CopiesEngine, SwapEngine
from tiny import kind_patch

KINDS = ("classification", "regression", "multi_label", "token_classification", "embedding")


@pytest.mark.parametrize("design", [SwapEngine, CopiesEngine], ids=["swap", "copies"])
def test_grouped_designs_equal_the_engine(tiny_bert_dir, design):
    engines = [
        cls(load_backbone(str(tiny_bert_dir), "float32", "cpu"))
        for cls in (MultiTaskEngine, design)
    ]
    model = engines[0].backbone.model
    patches = [kind_patch(model, kind, kind, seed=i) for i, kind in enumerate(KINDS)]
    for engine in engines:
        for patch in patches:
            engine.register(patch.task, patch)
    texts = ["the cat sat on the mat", "a very good film", "it is", "not bad and not good"] * 3
    keys = [KINDS[i % len(KINDS)] for i in range(len(texts))]
    tok = engines[0].backbone.tokenizer
    rows = encode_inputs(tok, texts, 48)
    batch = collate(rows, tok.pad_token_id)
    want, got = (e.forward(batch, keys) for e in engines)
    for a, b, row in zip(want, got, rows, strict=True):
        real = len(row["input_ids"])  # a token task's padding positions are nobody's output
        if a.dim() == 2:
            a, b = a[:real], b[:real]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_lora_design_batches_mixed_adapters_as_each_row_alone(tiny_bert_dir):
    pytest.importorskip("peft", reason="peft is a dev dependency (pip install -e '.[dev]')")
    from bench.designs import LoraEngine

    engine = LoraEngine(load_backbone(str(tiny_bert_dir), "float32", "cpu"))
    model = engine.backbone.model
    kinds = ("classification", "regression", "embedding")
    patches = [kind_patch(model, kind, kind, seed=i) for i, kind in enumerate(kinds)]
    for patch in patches:  # made first: the adapters change the model the patches describe
        engine.register(patch.task, patch)
    texts = ["the cat sat on the mat", "a very good film", "it is", "not bad and not good"] * 2
    keys = [kinds[i % 3] for i in range(len(texts))]
    tok = engine.backbone.tokenizer
    rows = encode_inputs(tok, texts, 48)
    mixed = engine.forward(collate(rows, tok.pad_token_id), keys)
    for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
        (alone,) = engine.forward(collate([row], tok.pad_token_id), [key])
        torch.testing.assert_close(mixed[i], alone, atol=1e-5, rtol=1e-5)
    with engine._peft.disable_adapter():  # the same rows without the adapters
        base = engine.forward(collate(rows[:1], tok.pad_token_id), keys[:1])[0]
    assert not torch.allclose(base, mixed[0])  # the adapter changes the output
