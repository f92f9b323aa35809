"""Choosing the backbone forward: what auto picks on this host, forced choices, fallbacks."""

from __future__ import annotations

import logging
import random
import sys

import pytest
import torch
from transformers import AutoModel

from bitpatch.patches import forwards
from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.forwards import FORWARDS

from tiny import make_config, make_tokenizer, random_patch, random_sentence


def engine(folder, dtype="float32", forward="auto", cache_root=None) -> MultiTaskEngine:
    return MultiTaskEngine(load_backbone(str(folder), dtype, "cpu"), forward, cache_root)


@pytest.fixture
def amd_cpu(monkeypatch):
    """The host reads as an AMD CPU (where ONNX Runtime outruns the eager walk)."""
    monkeypatch.setattr(forwards, "cpu_vendor", lambda: "AuthenticAMD")


def test_auto_runs_onnxruntime_for_a_float32_cpu_backbone(tiny_bert_dir, tmp_path, amd_cpu):
    assert engine(tiny_bert_dir, cache_root=tmp_path).forward_name == "onnxruntime"


def test_auto_runs_the_hybrid_on_an_intel_cpu_and_says_why(
    tiny_bert_dir, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(forwards, "cpu_vendor", lambda: "GenuineIntel")
    with caplog.at_level(logging.INFO, logger="bitpatch.patches.forwards"):
        chosen = engine(tiny_bert_dir, cache_root=tmp_path)
    assert (chosen.forward_name, chosen.forward_kernel) == ("hybrid", "onnxruntime+aten")
    assert chosen.forward_yields  # its long forwards break between layers
    assert "forward=hybrid reason=on an Intel CPU ONNX Runtime is faster up to 128" in caplog.text
    forced = engine(tiny_bert_dir, forward="onnxruntime", cache_root=tmp_path)
    assert forced.forward_name == "onnxruntime"  # forcing it still serves through it


def test_the_hybrid_runs_short_batches_in_the_graph_long_ones_eagerly_with_the_same_outputs(
    tiny_bert_dir, tmp_path
):
    hybrid, eager = (engine(tiny_bert_dir, forward=f, cache_root=tmp_path) for f in FORWARDS[2:4])
    model = eager.backbone.model
    patches = [random_patch(model, f"t{i}", 2 + i % 3, "mean", seed=i) for i in range(16)]
    for e in (hybrid, eager):
        for patch in patches:
            e.register(patch.task, patch)
    ran = []
    split = hybrid.backbone_forward
    for part in ("small", "large"):
        inner = getattr(split, part)
        setattr(split, part, lambda *a, part=part, inner=inner: ran.append(part) or inner(*a))
    tok = eager.backbone.tokenizer
    rng = random.Random(0)
    texts = [random_sentence(rng) for _ in range(24)]
    keys = [f"t{i % 16}" for i in range(24)]
    long_batch = collate(encode_inputs(tok, texts, 48), tok.pad_token_id)
    split.small_tokens = int(long_batch["attention_mask"].sum()) - 1  # this batch is long
    pairs = zip(hybrid.forward(long_batch, keys), eager.forward(long_batch, keys), strict=True)
    for got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # the same eager walk
    for i in (0, 5, 17):  # each row alone is a short batch: the graph's answer equals the walk's
        alone = collate(encode_inputs(tok, texts[i : i + 1], 48), tok.pad_token_id)
        got = hybrid.forward(alone, keys[i : i + 1])[0]
        torch.testing.assert_close(got, eager.forward(alone, keys[i : i + 1])[0], atol=1e-4, rtol=0)
    assert ran == ["large", "small", "small", "small"]


def test_the_hybrid_needs_onnxruntime(tiny_bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match="hybrid forward cannot serve this backbone: onnxruntime"):
        engine(tiny_bert_dir, forward="hybrid")


def test_auto_keeps_the_eager_walk_in_bfloat16_and_says_why(tiny_bert_dir, caplog):
    with caplog.at_level(logging.INFO, logger="bitpatch.patches.forwards"):
        chosen = engine(tiny_bert_dir, dtype="bfloat16")
    assert chosen.forward_name == "packed"
    assert "instead_of=onnxruntime reason=the backbone runs in bfloat16" in caplog.text


def test_without_onnxruntime_auto_falls_back_and_forcing_it_fails(
    tiny_bert_dir, monkeypatch, caplog, amd_cpu
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level(logging.INFO, logger="bitpatch.patches.forwards"):
        assert engine(tiny_bert_dir).forward_name == "packed"
    assert "onnxruntime is not installed" in caplog.text
    with pytest.raises(ValueError, match="onnxruntime is not installed"):
        engine(tiny_bert_dir, forward="onnxruntime")


def test_a_graph_it_cannot_build_falls_back_to_the_eager_walk(tmp_path, caplog, amd_cpu):
    tokenizer = make_tokenizer("bert")
    config = make_config("bert", len(tokenizer))
    config.hidden_act = "silu"  # not expressed by the graph
    AutoModel.from_config(config).save_pretrained(tmp_path / "silu")
    tokenizer.save_pretrained(tmp_path / "silu")
    with caplog.at_level(logging.INFO, logger="bitpatch.patches.forwards"):
        assert engine(tmp_path / "silu").forward_name == "packed"
    assert "building it failed: activation 'silu'" in caplog.text
    with pytest.raises(ValueError, match="onnxruntime forward failed to build"):
        engine(tmp_path / "silu", forward="onnxruntime")


def test_unknown_forward_is_refused(tiny_bert_dir):
    with pytest.raises(ValueError, match="forward must be one of auto, onnxruntime"):
        engine(tiny_bert_dir, forward="tensorrt")
    assert FORWARDS == ("auto", "onnxruntime", "hybrid", "packed", "padded")
