"""bitpatch/1 files: round trip, and every validation error names what is wrong."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save as save_safetensors

from bitpatch.patches.backbone import backbone_from_model
from bitpatch.patches.patch_file import (
    PatchError,
    check_patch,
    decode_patch,
    patch_metadata,
    read_patch,
    serialize,
)

from tiny import make_model, random_patch

Q_BIAS = "encoder.layer.0.attention.self.query.bias"


@pytest.fixture(scope="module")
def backbone():
    model, tokenizer = make_model("bert")
    return backbone_from_model(model, tokenizer, "tiny")


@pytest.fixture
def patch(backbone):
    return random_patch(backbone.model, "sentiment", 3, "mean", seed=1)


def parts(patch):
    tensors = {f"bias.{k}": v for k, v in patch.biases.items()}
    tensors |= {"head.weight": patch.head_weight, "head.bias": patch.head_bias}
    return tensors, patch.metadata()


def rejects(data: bytes, backbone, *words: str, code: str = "invalid_patch") -> PatchError:
    with pytest.raises(PatchError) as info:
        read_patch(data, backbone.spec)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert info.value.code == code
    return info.value


def test_round_trip_is_exact_and_deterministic(patch, backbone):
    data = patch.to_bytes()
    assert data == patch.to_bytes()
    back = read_patch(data, backbone.spec)
    assert back.metadata() == patch.metadata()
    for name, value in patch.biases.items():
        assert torch.equal(back.biases[name], value)
    assert torch.equal(back.head_weight, patch.head_weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_are_accepted(patch, backbone, dtype):
    tensors, meta = parts(patch)
    back = read_patch(serialize({k: v.to(dtype) for k, v in tensors.items()}, meta), backbone.spec)
    assert back.head_weight.dtype == torch.float32
    torch.testing.assert_close(back.head_weight, patch.head_weight.to(dtype).float())


def test_not_safetensors_or_truncated(patch, backbone):
    rejects(b"hello world, not a patch", backbone, "not a readable safetensors", "'file'"[1:-1])
    rejects(patch.to_bytes()[:-7], backbone, "safetensors")


@pytest.mark.parametrize(
    "key", ["format", "task", "backbone", "backbone_sha256", "kind", "pooling", "max_length"]
)
def test_missing_metadata(patch, backbone, key):
    tensors, meta = parts(patch)
    del meta[key]
    assert rejects(serialize(tensors, meta), backbone, f"'{key}' is missing").key == key


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("format", "bitpatch/9", ("unknown format", "bitpatch/1")),
        ("kind", "ranking", ("'kind'",)),
        ("pooling", "max", ("'pooling'",)),
        ("max_length", "long", ("'max_length'",)),
        ("labels", "[not json", ("'labels'", "JSON")),
        ("labels", '"a"', ("'labels'", "list")),
        ("labels", '["a", 1, "c"]', ("'labels'", "strings")),
        ("labels", '["a", "b", "a"]', ("duplicate labels", "'a'")),
        ("metrics", "[1]", ("'metrics'", "dict")),
    ],
)
def test_malformed_metadata(patch, backbone, key, value, words):
    tensors, meta = parts(patch)
    meta[key] = value
    assert rejects(serialize(tensors, meta), backbone, *words).key == key


def test_classification_needs_labels(patch, backbone):
    tensors, meta = parts(patch)
    del meta["labels"]
    rejects(serialize(tensors, meta), backbone, "'labels' is missing")


def test_tensor_not_a_bias_of_this_backbone(patch, backbone):
    tensors, meta = parts(patch)
    tensors["bias.encoder.layer.9.output.dense.bias"] = torch.zeros(32)
    err = rejects(serialize(tensors, meta), backbone, "not a bias of backbone")
    assert err.key == "bias.encoder.layer.9.output.dense.bias"


def test_non_bias_tensor(patch, backbone):
    tensors, meta = parts(patch)
    tensors["bias.encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 32)
    rejects(
        serialize(tensors, meta),
        backbone,
        "not a bias term",
        "bias.encoder.layer.0.attention.self.query.weight",
    )
    tensors, _ = parts(patch)
    tensors["encoder.layer.0.output.dense.weight"] = torch.zeros(4)
    rejects(serialize(tensors, meta), backbone, "encoder.layer.0.output.dense.weight")


def test_wrong_shape(patch, backbone):
    tensors, meta = parts(patch)
    tensors[f"bias.{Q_BIAS}"] = torch.zeros(31)
    rejects(serialize(tensors, meta), backbone, f"bias.{Q_BIAS}", "(31,)", "(32,)")


def test_non_finite_value(patch, backbone):
    tensors, meta = parts(patch)
    tensors[f"bias.{Q_BIAS}"] = torch.full((32,), float("nan"))
    rejects(serialize(tensors, meta), backbone, "non-finite", Q_BIAS)
    tensors[f"bias.{Q_BIAS}"] = torch.zeros(32)
    tensors["head.bias"] = torch.tensor([0.0, float("inf"), 0.0])
    rejects(serialize(tensors, meta), backbone, "non-finite", "head.bias")


def test_integer_tensor(patch, backbone):
    tensors, meta = parts(patch)
    tensors["head.bias"] = torch.zeros(3, dtype=torch.int32)
    rejects(save_safetensors(tensors, meta), backbone, "head.bias", "dtype")


@pytest.mark.parametrize("key", ["head.weight", "head.bias"])
def test_missing_head(patch, backbone, key):
    tensors, meta = parts(patch)
    del tensors[key]
    assert rejects(serialize(tensors, meta), backbone, f"'{key}' is missing").key == key


def test_head_rows_must_match_labels(patch, backbone):
    tensors, meta = parts(patch)
    meta["labels"] = json.dumps(["a", "b"])
    rejects(serialize(tensors, meta), backbone, "head.weight", "number of labels")
    tensors, meta = parts(patch)
    tensors["head.bias"] = torch.zeros(2)
    rejects(serialize(tensors, meta), backbone, "head.bias", "(3,)")


def test_head_columns_must_match_hidden(patch, backbone):
    tensors, meta = parts(patch)
    tensors["head.weight"] = torch.zeros(3, 16)
    rejects(serialize(tensors, meta), backbone, "16 columns", "hidden size is 32")


def test_max_length_beyond_positions(patch, backbone):
    tensors, meta = parts(patch)
    meta["max_length"] = "65"
    rejects(serialize(tensors, meta), backbone, "'max_length' is 65", "at most 64")


def test_fingerprint_of_another_backbone(patch, backbone):
    tensors, meta = parts(patch)
    meta["backbone_sha256"] = "0" * 64
    rejects(serialize(tensors, meta), backbone, "retrain", code="backbone_mismatch")


def test_regression_needs_one_output(backbone):
    patch = random_patch(backbone.model, "sts", 1, "cls", seed=2)
    assert read_patch(patch.to_bytes(), backbone.spec).num_outputs == 1
    tensors, meta = parts(patch)
    tensors["head.weight"] = torch.zeros(2, 32)
    rejects(serialize(tensors, meta), backbone, "head.weight")


def test_decode_without_backbone_checks_structure_only(patch):
    tensors, meta = parts(patch)
    meta["backbone_sha256"] = "f" * 64
    assert decode_patch(serialize(tensors, meta)).backbone_sha256 == "f" * 64


def test_a_checked_patch_carries_its_digest_metadata_and_fit(backbone, patch):
    data = patch.to_bytes()
    checked = check_patch(data, backbone.spec)
    assert checked.sha256 == hashlib.sha256(data).hexdigest()
    assert checked.meta == patch_metadata(data)
    assert checked.backbone_sha256 == backbone.spec.sha256
    assert torch.equal(checked.patch.head_weight, patch.head_weight)
    other = backbone_from_model(*make_model("roberta"), "other")
    with pytest.raises(PatchError) as info:
        check_patch(data, other.spec)
    assert info.value.code == "backbone_mismatch"
