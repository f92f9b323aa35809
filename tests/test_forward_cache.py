"""The on-disk cache of compiled forwards: built once, reused, never half-written."""

from __future__ import annotations

import logging

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.forward_cache import ForwardCache


def onnx_engine(folder, cache_root) -> MultiTaskEngine:
    return MultiTaskEngine(load_backbone(str(folder), "float32", "cpu"), "onnxruntime", cache_root)


def test_a_second_start_loads_the_cached_graph(tiny_bert_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bitpatch.patches.onnx_forward"):
        onnx_engine(tiny_bert_dir, tmp_path)
        assert "event=forward_built" in caplog.text and "forward_cache_hit" not in caplog.text
        caplog.clear()
        onnx_engine(tiny_bert_dir, tmp_path)
    assert "event=forward_cache_hit" in caplog.text and "forward_built" not in caplog.text
    (entry,) = tmp_path.iterdir()  # one entry, no scratch folder left behind
    assert entry.name.startswith("onnxruntime") and "float32" in entry.name
    files = sorted(p.name for p in entry.iterdir())
    assert files == ["layer00.onnx", "layer01.onnx", "model.onnx"]  # whole, and one per layer


def test_each_backbone_has_its_own_entry(tiny_bert_dir, tiny_roberta_dir, tmp_path):
    onnx_engine(tiny_bert_dir, tmp_path)
    onnx_engine(tiny_roberta_dir, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_an_unwritable_root_still_serves(tiny_bert_dir, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache root should be")
    with caplog.at_level(logging.WARNING, logger="bitpatch.patches.forward_cache"):
        assert onnx_engine(tiny_bert_dir, blocker / "cache").forward_name == "onnxruntime"
    assert "event=forward_cache_unwritable" in caplog.text


def test_a_concurrent_build_keeps_the_first_entry(tmp_path):
    first, second = ForwardCache(tmp_path, "k"), ForwardCache(tmp_path, "k")
    first.scratch("model.onnx").write_text("first")
    second.scratch("model.onnx").write_text("second")
    assert first.commit("model.onnx").read_text() == "first"
    assert second.commit("model.onnx").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
    assert ForwardCache(tmp_path, "k").lookup("model.onnx") is not None
    assert ForwardCache(tmp_path, "other").lookup("model.onnx") is None
