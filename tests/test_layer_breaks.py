"""Layer breaks: the packed walk and the ONNX Runtime chain call back between layers, and a
forward run inside a break leaves both forwards' outputs exactly as each alone."""

from __future__ import annotations

import threading

import torch

from bitpatch.patches import backbone_from_model
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.layer_breaks import between_layers, layer_done

from tiny import make_model, random_patch


def packed_engine(forward: str = "packed", cache_root=None) -> MultiTaskEngine:
    model, tokenizer = make_model("bert")
    backbone = backbone_from_model(model, tokenizer, "tiny")
    engine = MultiTaskEngine(backbone, forward, cache_root)
    for i in range(2):
        engine.register(f"t{i}", random_patch(model, f"t{i}", 3, "cls", seed=i))
    return engine


def batch_of(engine: MultiTaskEngine, texts: list[str]):
    tokenizer = engine.backbone.tokenizer
    return collate(encode_inputs(tokenizer, texts, 32), tokenizer.pad_token_id)  # (B, T)


def test_outside_a_block_a_layer_break_does_nothing():
    layer_done()


def test_the_packed_walk_breaks_between_its_layers_and_their_halves_only():
    engine = packed_engine()
    breaks = []
    with between_layers(lambda: breaks.append(1)):
        engine.forward_by_task(batch_of(engine, ["a b c", "d"]), ["t0", "t1"])
    assert engine.forward_yields
    assert len(breaks) == 2 * engine.backbone.model.config.num_hidden_layers - 1


def test_a_forward_inside_a_break_leaves_both_forwards_as_alone():
    engine = packed_engine()
    outer, inner = batch_of(engine, ["one two three", "four", "five six"]), batch_of(engine, ["q"])
    outer_keys, inner_keys = ["t0", "t1", "t0"], ["t1"]
    want_outer = engine.forward_by_task(outer, outer_keys)
    want_inner = engine.forward_by_task(inner, inner_keys)
    got_inner, breaks = [], []

    def run_inner():
        breaks.append(1)  # the inner forward's own breaks do not call back again
        if not got_inner:
            got_inner.append(engine.forward_by_task(inner, inner_keys))

    with between_layers(run_inner):
        got_outer = engine.forward_by_task(outer, outer_keys)
    assert len(breaks) == 2 * engine.backbone.model.config.num_hidden_layers - 1
    for got, want in ((got_outer, want_outer), (got_inner[0], want_inner)):
        for a, b in zip(got, want, strict=True):
            assert a.rows == b.rows
            torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=1e-6)


def test_the_onnxruntime_forward_breaks_long_forwards_between_layers(tmp_path):
    engine = packed_engine("onnxruntime", tmp_path)
    long_text = " ".join(["word"] * 40)  # 32 tokens a row: 6 rows are a long forward
    outer, inner = batch_of(engine, [long_text] * 6), batch_of(engine, ["q"])
    outer_keys, inner_keys = ["t0", "t1"] * 3, ["t1"]
    want_outer = engine.forward_by_task(outer, outer_keys)
    want_inner = engine.forward_by_task(inner, inner_keys)
    got_inner = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a chain on several threads: sessions that do not spin
    try:
        with between_layers(lambda: got_inner.append(engine.forward_by_task(inner, inner_keys))):
            engine.forward_by_task(inner, inner_keys)  # short: whole, no break
            assert not got_inner
            got_outer = engine.forward_by_task(outer, outer_keys)
    finally:
        torch.set_num_threads(before)
    assert engine.forward_yields
    assert len(got_inner) == engine.backbone.model.config.num_hidden_layers - 1
    assert {(2, True), (2, False)} <= set(engine.backbone_forward._sessions)
    for got, want in ((got_outer, want_outer), (got_inner[0], want_inner)):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)


def test_a_block_holds_for_its_own_thread_only():
    calls = []
    other = threading.Thread(target=layer_done)
    with between_layers(lambda: calls.append(threading.get_ident())):
        other.start()
        other.join()
        layer_done()
    layer_done()
    assert calls == [threading.get_ident()]
