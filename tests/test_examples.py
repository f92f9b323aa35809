"""Golden examples: comparing answers within a dtype's tolerance, the metadata's shape, and
the engine refusing a patch whose examples it answers otherwise."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.examples import check_examples_shape, first_difference, tolerance_for
from bitpatch.patches.patch_file import PatchError, read_patch

from tiny import kind_patch, make_model


def test_numbers_agree_within_the_tolerance_and_strings_exactly():
    want = {"label": "pos", "score": 0.9, "scores": {"pos": 0.9, "neg": 0.1}}
    assert first_difference(want, {**want, "score": 0.9004}, 1e-3) is None
    moved = {**want, "scores": {"pos": 0.8, "neg": 0.2}}
    assert "scores.pos" in first_difference(want, moved, 1e-3)
    assert "label" in first_difference(want, {**want, "label": "neg"}, 1e-3)
    tokens = {"tokens": [{"text": "Ann", "start": 0}]}
    assert "tokens[0].start" in first_difference(
        tokens, {"tokens": [{"text": "Ann", "start": 1}]}, 1
    )
    assert tolerance_for(torch.bfloat16) > tolerance_for(torch.float32)


@pytest.mark.parametrize(
    "examples",
    [
        {},
        [{"input": "a"}],
        [{"input": 3, "output": {}}],
        [{"input": ["a"], "output": {}}],
        [{"input": "a", "output": []}],
        [{"input": "a", "output": {}}] * 65,
    ],  # fmt: skip
)
def test_malformed_examples_are_named(examples):
    assert check_examples_shape(examples) is not None


@pytest.mark.parametrize("kind", ["classification", "regression", "multi_label",
                                  "token_classification", "embedding"])  # fmt: skip
def test_the_engine_checks_every_kinds_examples(tiny_bert_dir, kind):
    engine = MultiTaskEngine(load_backbone(str(tiny_bert_dir), "float32", "cpu"))
    patch = kind_patch(make_model("bert")[0], kind, "t", seed=3)
    engine.register("t", patch)
    items = ["the cat sat", "a dog ran far"]
    examples = [
        {"input": i, "output": o} for i, o in zip(items, engine.predict("t", items), strict=True)
    ]
    carried = read_patch(replace(patch, examples=examples).to_bytes())
    assert carried.examples == examples
    engine.check_outputs(carried)  # agrees
    other = kind_patch(make_model("bert")[0], kind, "t", seed=4)
    engine.register("other", other)
    wrong = [examples[0], {"input": items[1], "output": engine.predict("other", items)[1]}]
    assert first_difference(wrong[1]["output"], examples[1]["output"], 1e-3) is not None
    with pytest.raises(PatchError, match="examples\\[1\\]") as refused:
        engine.check_outputs(replace(patch, examples=wrong))
    assert refused.value.code == "parity_failed"
