"""The ONNX Runtime forward equals the eager packed walk: a 16-task mix, every thread count."""

from __future__ import annotations

import random

import pytest
import torch

from bitpatch.patches.backbone import default_backbone_path, load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine

from tiny import random_patch, random_sentence

POOLINGS = ("mean", "cls", "pooler")


def engines_with_16_tasks(folder):
    """The same 16 patches (2-5 labels, every pooling) on an onnxruntime and a packed engine."""
    engines = [
        MultiTaskEngine(load_backbone(str(folder), "float32", "cpu"), forward)
        for forward in ("onnxruntime", "packed")
    ]
    model = engines[1].backbone.model
    patches = [
        random_patch(model, f"t{i}", 2 + i % 4, POOLINGS[i % 3], seed=i, fraction=0.8)
        for i in range(16)
    ]
    for engine in engines:
        for patch in patches:
            engine.register(patch.task, patch)
    return engines, [p.task for p in patches]


def probabilities(engine, texts: list, keys: list[str]) -> list[torch.Tensor]:
    tok = engine.backbone.tokenizer
    batch = collate(encode_inputs(tok, texts, 48), tok.pad_token_id)
    return [x.softmax(-1) for x in engine.forward(batch, keys)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_a_16_task_mix_equals_the_eager_walk(family_dir, threads, request):
    (onnx, eager), tasks = engines_with_16_tasks(request.getfixturevalue(family_dir))
    rng = random.Random(threads)
    texts = [random_sentence(rng) for _ in range(32)]
    texts[3::5] = [[random_sentence(rng), random_sentence(rng)] for _ in texts[3::5]]  # pairs
    keys = [tasks[i % 16] for i in range(32)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got, want = probabilities(onnx, texts, keys), probabilities(eager, texts, keys)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_rows_of_one_length_and_a_lone_row(tiny_bert_dir):
    (onnx, eager), tasks = engines_with_16_tasks(tiny_bert_dir)
    for texts in (["the cat sat"] * 4, ["a"]):
        keys = tasks[: len(texts)]
        for a, b in zip(
            probabilities(onnx, texts, keys), probabilities(eager, texts, keys), strict=True
        ):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_16_task_mix_on_the_default_backbone():
    (onnx, eager), tasks = engines_with_16_tasks(default_backbone_path())
    texts = [f"Sentence {i} about a film that was {'not ' * (i % 3)}good." for i in range(32)]
    keys = [tasks[i % 16] for i in range(32)]
    for a, b in zip(
        probabilities(onnx, texts, keys), probabilities(eager, texts, keys), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
