"""export -> plain transformers gives the engine's logits; import -> export round trips."""

from __future__ import annotations

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
