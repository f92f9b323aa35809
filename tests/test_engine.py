"""A batch mixing tasks gives each row what a plain transformers model with its biases gives."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, DistilBertConfig, DistilBertModel

from bitpatch.patches.backbone import backbone_from_model, default_backbone_path, load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.patch_file import PatchError, check_patch

from tiny import make_model, make_tokenizer, patched_model, random_patch, random_sentence

# (labels, pooling, fraction of bias terms patched): 2/3/5 labels, one regression, 3 poolings
TASK_SHAPES = [
    (2, "pooler", 1.0),
    (3, "cls", 1.0),
    (5, "mean", 1.0),
    (1, "mean", 1.0),
    (2, "cls", 0.3),
    (3, "pooler", 0.5),
    (2, "mean", 0.0),
    (5, "cls", 0.7),
    (1, "pooler", 0.4),
]


def reference_logits(folder, patch, item) -> torch.Tensor:
    """Plain transformers model with the task's biases copied in; pooling and head by hand."""
    model, tokenizer = patched_model(folder, patch)
    with torch.no_grad():
        text, pair = (item, None) if isinstance(item, str) else item
        enc = tokenizer(
            text, pair, truncation=True, max_length=patch.max_length, return_tensors="pt"
        )
        out = model(**enc)
        hidden = out.last_hidden_state[0]  # (T, H)
        pooled = {"cls": hidden[0], "mean": hidden.mean(0), "pooler": out.pooler_output[0]}
        return pooled[patch.pooling] @ patch.head_weight.T + patch.head_bias


def mixed_rows(rng: random.Random, n_tasks: int, n_rows: int):
    """Random (task index, item) rows: single sentences and pairs of random lengths."""
    rows = []
    for i in range(n_rows):
        text = random_sentence(rng)
        item = text if rng.random() < 0.5 else [text, random_sentence(rng)]
        rows.append((i % n_tasks if i < n_tasks else rng.randrange(n_tasks), item))
    return rows


@pytest.fixture(params=["padded", "packed", "onnxruntime"])
def forward(request) -> str:
    """Every forward the server can run."""
    return request.param


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def torch_threads(request):
    """A worker's own thread and a lone forward's widened team (the server runs both)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def build_engine(folder, forward: str = "auto"):
    engine = MultiTaskEngine(load_backbone(str(folder), dtype="float32", device="cpu"), forward)
    model = engine.backbone.model
    patches = [
        random_patch(
            model,
            f"t{i}",
            n,
            pooling,
            seed=i,
            fraction=frac,
            max_length=min(48, engine.backbone.spec.max_positions),
        )
        for i, (n, pooling, frac) in enumerate(TASK_SHAPES)
    ]
    for p in patches:
        engine.register(p.task, p)
    return engine, patches


def run_mixed(engine, rows, patches):
    """Encode each row with its own task's max_length, pad together, one forward."""
    tok = engine.backbone.tokenizer
    encoded = [encode_inputs(tok, [item], patches[t].max_length)[0] for t, item in rows]
    return engine.forward(collate(encoded, tok.pad_token_id), [patches[t].task for t, _ in rows])


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_mixed_batch_equals_each_task_alone(family_dir, forward, torch_threads, request):
    folder = request.getfixturevalue(family_dir)
    engine, patches = build_engine(folder, forward)
    assert engine.forward_name == forward
    rows = mixed_rows(random.Random(1), len(patches), 24)
    logits = run_mixed(engine, rows, patches)
    for (t, item), got in zip(rows, logits, strict=True):
        want = reference_logits(folder, patches[t], item)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", [0, 3, 5])
def test_single_task_batch_equals_reference(tiny_bert_dir, forward, task):
    engine, patches = build_engine(tiny_bert_dir, forward)
    items = [item for _, item in mixed_rows(random.Random(task), 1, 6)]
    logits = run_mixed(engine, [(task, item) for item in items], patches)
    for item, got in zip(items, logits, strict=True):
        want = reference_logits(tiny_bert_dir, patches[task], item)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_packed_equals_padded_in_bfloat16(tiny_roberta_dir):
    rows = mixed_rows(random.Random(4), len(TASK_SHAPES), 20)
    _, patches = build_engine(tiny_roberta_dir)  # patches fingerprint the float32 weights
    padded, packed_engine = (
        MultiTaskEngine(load_backbone(str(tiny_roberta_dir), "bfloat16", "cpu"), mode)
        for mode in ("padded", "packed")
    )
    for engine in (padded, packed_engine):
        for p in patches:
            engine.register(p.task, p)
    want = run_mixed(padded, rows, patches)
    for a, b in zip(want, run_mixed(packed_engine, rows, patches), strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


def test_packed_refused_for_other_architectures(tmp_path):
    tokenizer = make_tokenizer("bert")
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=4)
    DistilBertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    folder = tmp_path
    assert MultiTaskEngine(load_backbone(str(folder), "float32", "cpu")).forward_name == "padded"
    with pytest.raises(ValueError, match="packed forwards support bert, roberta"):
        MultiTaskEngine(load_backbone(str(folder), "float32", "cpu"), "packed")
    with pytest.raises(ValueError, match="onnxruntime forward cannot serve.*not packable"):
        MultiTaskEngine(load_backbone(str(folder), "float32", "cpu"), "onnxruntime")


@pytest.mark.slow
def test_mixed_batch_default_backbone(forward):
    folder = default_backbone_path()
    engine, patches = build_engine(folder, forward)
    rows = mixed_rows(random.Random(2), len(patches), 12)
    logits = run_mixed(engine, rows, patches)
    for (t, item), got in zip(rows, logits, strict=True):
        torch.testing.assert_close(
            got, reference_logits(folder, patches[t], item), atol=1e-5, rtol=1e-5
        )


def test_engine_rows_differ_per_task(tiny_bert_dir):
    engine, patches = build_engine(tiny_bert_dir)
    rows = [(0, "the movie was great"), (4, "the movie was great")]
    a, b = run_mixed(engine, rows, patches)
    assert a.shape == (2,) and not torch.allclose(a, b[:2])


def test_unpatched_backbone_outside_context_is_untouched(tiny_bert_dir):
    engine, _ = build_engine(tiny_bert_dir)
    plain = AutoModel.from_pretrained(tiny_bert_dir).eval()
    enc = AutoTokenizer.from_pretrained(tiny_bert_dir)("a cat sat", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            engine.backbone.model(**enc).last_hidden_state,
            plain(**enc).last_hidden_state,
            atol=0,
            rtol=0,
        )


def test_replace_and_unregister(tiny_bert_dir):
    engine, patches = build_engine(tiny_bert_dir)
    rows = [(0, "a dog runs fast")]
    before = run_mixed(engine, rows, patches)[0]
    engine.register("t0", patches[1])  # t0 now serves t1's patch
    swapped = run_mixed(engine, rows, patches)[0]
    torch.testing.assert_close(swapped, run_mixed(engine, [(1, "a dog runs fast")], patches)[0])
    assert swapped.shape != before.shape or not torch.allclose(swapped, before)
    engine.unregister("t0")
    with pytest.raises(KeyError, match="t0"):
        run_mixed(engine, rows, patches)


def test_many_registrations_and_replacements(tiny_bert_dir):
    engine, patches = build_engine(tiny_bert_dir)
    want = run_mixed(engine, [(2, "the sun")], patches)[0]
    for i in range(100):
        engine.register(f"extra{i % 7}", patches[i % len(patches)])
    assert len(engine.registered_keys()) == len(patches) + 7
    torch.testing.assert_close(run_mixed(engine, [(2, "the sun")], patches)[0], want)
    engine.unregister("extra3")
    assert not engine.is_registered("extra3") and engine.is_registered("extra4")


def test_register_during_forward_leaves_that_forward_unchanged(tiny_bert_dir, forward):
    engine, patches = build_engine(tiny_bert_dir, forward)
    rows = mixed_rows(random.Random(3), len(patches), 16)
    want = run_mixed(engine, rows, patches)
    entered, release = threading.Event(), threading.Event()
    backbone_forward = engine.backbone_forward

    def pausing(*args):
        """The forward, held at its start until the test has changed every task."""
        if threading.current_thread().name == "fwd":
            entered.set()
            release.wait(10)
        return backbone_forward(*args)

    engine.backbone_forward = pausing
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(out=run_mixed(engine, rows, patches)), name="fwd"
    )
    thread.start()
    assert entered.wait(10)
    for i, p in enumerate(patches):  # replace every task, add new ones, remove one
        engine.register(p.task, patches[(i + 1) % len(patches)])
        engine.register(f"new{i}", p)
    engine.unregister("t3")
    release.set()
    thread.join(10)
    for got, exp in zip(result["out"], want, strict=True):
        torch.testing.assert_close(got, exp, atol=0, rtol=0)


def test_a_patch_checked_for_another_backbone_is_checked_again():
    serving = backbone_from_model(*make_model("bert"), "serving")
    other = backbone_from_model(*make_model("roberta"), "other")
    checked = check_patch(random_patch(other.model, "t", 2, "cls", seed=3).to_bytes(), other.spec)
    engine = MultiTaskEngine(serving)
    with pytest.raises(PatchError):
        engine.register("t", checked)
    assert not engine.is_registered("t")
