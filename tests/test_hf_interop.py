"""export -> plain transformers gives the engine's logits; import -> export round trips."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bitpatch.cli import main as cli_main
from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.hf_interop import export_patch, import_model, imported_task_name
from bitpatch.patches.patch_file import PatchError, read_patch

from tiny import random_patch

ITEMS = ["the movie was great", ("a cat sat on the mat", "a dog runs fast"), "not very good"]


def hf_logits(folder, items, max_length) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    rows = []
    for item in items:
        text, pair = (item, None) if isinstance(item, str) else item
        enc = tok(text, pair, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**enc).logits[0])
    return torch.stack(rows)


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
@pytest.mark.parametrize("labels", [3, 1])
def test_export_reproduces_engine_logits(family_dir, labels, request, tmp_path):
    folder = request.getfixturevalue(family_dir)
    backbone = load_backbone(str(folder), "float32", "cpu")
    patch = random_patch(backbone.model, "t", labels, "pooler", seed=5, max_length=40)
    model = export_patch(backbone, patch)
    model.save_pretrained(tmp_path / "hf")
    backbone.tokenizer.save_pretrained(tmp_path / "hf")
    engine = MultiTaskEngine(backbone)
    engine.register("t", patch)
    want = torch.stack(engine.predict_logits("t", ITEMS))
    torch.testing.assert_close(hf_logits(tmp_path / "hf", ITEMS, 40), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_import_export_round_trip(family_dir, request, tmp_path):
    folder = request.getfixturevalue(family_dir)
    backbone = load_backbone(str(folder), "float32", "cpu")
    patch = random_patch(backbone.model, "t", 2, "pooler", seed=6, fraction=0.5, max_length=40)
    back = import_model(backbone, export_patch(backbone, patch), "t", 40)
    assert set(back.biases) == set(patch.biases)
    for name, value in patch.biases.items():
        torch.testing.assert_close(back.biases[name], value, atol=0, rtol=0)
    torch.testing.assert_close(back.head_weight, patch.head_weight, atol=0, rtol=0)
    assert back.labels == patch.labels and back.kind == "classification"


def test_import_refuses_changed_weights(tiny_bert_dir):
    backbone = load_backbone(str(tiny_bert_dir), "float32", "cpu")
    model = export_patch(backbone, random_patch(backbone.model, "t", 2, "pooler", seed=7))
    with torch.no_grad():
        model.bert.encoder.layer[1].intermediate.dense.weight[0, 0] += 0.5
    with pytest.raises(PatchError, match=r"encoder\.layer\.1\.intermediate\.dense\.weight"):
        import_model(backbone, model, "t", 40)


def test_export_needs_pooler_pooling(tiny_bert_dir):
    backbone = load_backbone(str(tiny_bert_dir), "float32", "cpu")
    with pytest.raises(PatchError, match="--pooling pooler"):
        export_patch(backbone, random_patch(backbone.model, "t", 2, "mean", seed=8))


def test_cli_export_then_import(tiny_bert_dir, tmp_path):
    backbone = load_backbone(str(tiny_bert_dir), "float32", "cpu")
    patch = random_patch(backbone.model, "cli", 2, "pooler", seed=9, max_length=40)
    patch.save(tmp_path / "p.safetensors")
    for argv in (
        [
            "export",
            str(tmp_path / "p.safetensors"),
            "--out",
            str(tmp_path / "hf"),
            "--backbone",
            str(tiny_bert_dir),
        ],
        [
            "import",
            str(tmp_path / "hf"),
            "--out",
            str(tmp_path / "q.safetensors"),
            "--backbone",
            str(tiny_bert_dir),
        ],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(argv)
        assert exit_info.value.code == 0
    back = read_patch(tmp_path / "q.safetensors", backbone.spec)
    torch.testing.assert_close(back.head_bias, patch.head_bias, atol=0, rtol=0)
    assert (back.task, back.max_length) == ("cli", 40)  # as `export` recorded them


def test_import_names_the_task_after_the_folder_without_a_record():
    from transformers import BertConfig

    assert imported_task_name(BertConfig(), "/models/My Intents_v2/") == "my-intents_v2"
    assert imported_task_name(BertConfig(bitpatch_task="rte"), "/x/whatever") == "rte"


def kind_round_trip(folder, kind: str, tmp_path):
    """A patch of `kind` exported, then imported back with the CLI's loader."""
    from bitpatch.patches.hf_interop import export_folder, load_for_import

    from tiny import kind_patch

    backbone = load_backbone(str(folder), "float32", "cpu")
    patch = kind_patch(backbone.model, kind, "t", seed=9, max_length=40)
    if kind == "multi_label":
        patch = replace(patch, pooling="pooler")  # sequence classification sits on the pooler
    export_folder(backbone, patch, tmp_path / "hf")
    return backbone, patch, load_for_import(str(tmp_path / "hf"))


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_multi_label_exports_as_multi_label_sequence_classification(family_dir, request, tmp_path):
    backbone, patch, model = kind_round_trip(
        request.getfixturevalue(family_dir), "multi_label", tmp_path
    )
    assert model.config.problem_type == "multi_label_classification"
    engine = MultiTaskEngine(backbone)
    engine.register("t", patch)
    texts = [i for i in ITEMS if isinstance(i, str)]
    torch.testing.assert_close(
        hf_logits(tmp_path / "hf", texts, 40),
        torch.stack(engine.predict_logits("t", texts)),
        atol=1e-5,
        rtol=1e-5,
    )
    back = import_model(backbone, model, "t", 40)
    assert back.kind == "multi_label" and back.labels == patch.labels
    assert back.thresholds == patch.label_thresholds()
    torch.testing.assert_close(back.head_weight, patch.head_weight, atol=0, rtol=0)


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_token_classification_exports_and_imports(family_dir, request, tmp_path):
    backbone, patch, model = kind_round_trip(
        request.getfixturevalue(family_dir), "token_classification", tmp_path
    )
    assert type(model).__name__.endswith("ForTokenClassification")
    engine = MultiTaskEngine(backbone)
    engine.register("t", patch)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ("the movie was great", "a cat sat on the mat"):
        with torch.no_grad():
            want = model(**tokenizer(text, return_tensors="pt")).logits[0]
        torch.testing.assert_close(
            engine.predict_logits("t", [text])[0], want, atol=1e-5, rtol=1e-5
        )
    back = import_model(backbone, model, "t", 40)
    assert back.kind == "token_classification" and back.pooling == "none"
    assert set(back.biases) == {n for n in patch.biases if not n.startswith("pooler.")}
    assert back.labels == patch.labels


@pytest.mark.parametrize("head", [True, False], ids=["projection", "no-head"])
def test_embedding_exports_as_sentence_transformers(tiny_bert_dir, tmp_path, head):
    from sentence_transformers import SentenceTransformer

    from bitpatch.patches.hf_interop import export_folder

    from tiny import kind_patch

    backbone = load_backbone(str(tiny_bert_dir), "float32", "cpu")
    patch = kind_patch(backbone.model, "embedding", "t", seed=3, max_length=40)
    if not head:
        patch = replace(patch, head_weight=None, head_bias=None)
    export_folder(backbone, patch, tmp_path / "st")
    engine = MultiTaskEngine(backbone)
    engine.register("t", patch)
    texts = ["the movie was great", "a cat sat on the mat", "not very good and dull"]
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    got = torch.tensor(model.encode(texts, batch_size=2))
    torch.testing.assert_close(
        got, torch.stack(engine.predict_logits("t", texts)), atol=1e-5, rtol=1e-5
    )
