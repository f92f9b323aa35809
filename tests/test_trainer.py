"""BitFit training on a tiny model: loss falls, only biases move, eval agrees with training."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import torch
from transformers import AutoModel, TrainerCallback

import bitpatch.trainer.train as train_module
from bitpatch.cli import main as cli_main
from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.patch_file import read_patch
from bitpatch.trainer.data import Example, TaskData
from bitpatch.trainer.evaluate import evaluate_patch
from bitpatch.trainer.model import bias_names, parse_bias_terms
from bitpatch.trainer.train import TrainSettings, train

from tiny import WORDS

POSITIVE = "great good love fine happy funny".split()
NEGATIVE = "bad terrible hate dull sad boring".split()


def toy_sentiment(n: int = 96, seed: int = 0) -> TaskData:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["neg", "pos"])
        words = rng.sample(POSITIVE if label == "pos" else NEGATIVE, 3) + ["the", "movie"]
        rng.shuffle(words)
        rows.append(Example(" ".join(words), None, label, i + 1))
    return TaskData("toy", "classification", ["neg", "pos"], rows[: n - 32], rows[n - 32 :])


def settings_for(folder, out, **kw) -> TrainSettings:
    base = dict(
        out=out,
        task="toy",
        backbone=str(folder),
        learning_rate=1e-2,
        epochs=4,
        batch_size=8,
        bf16=False,
        logging_steps=1,
        max_length=32,
        pooling="mean",
    )
    return TrainSettings(**{**base, **kw})


def test_bitfit_lowers_loss_and_moves_only_biases(tiny_bert_dir, tmp_path):
    result = train(settings_for(tiny_bert_dir, tmp_path / "toy.safetensors"), toy_sentiment())
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    original = dict(AutoModel.from_pretrained(tiny_bert_dir).named_parameters())
    for name, param in result.model.backbone.named_parameters():
        if not name.endswith("bias"):
            assert torch.equal(param, original[name]), name
        elif "key" not in name and "pooler" not in name:  # key bias: softmax-invariant, no grad
            assert not torch.equal(param, original[name]), name
    assert result.metrics["accuracy"] > 80


def test_eval_through_engine_equals_training_metric(tiny_bert_dir, tmp_path):
    data = toy_sentiment(seed=1)
    out = tmp_path / "toy.safetensors"
    train(settings_for(tiny_bert_dir, out, epochs=2), data)
    patch = read_patch(out, load_backbone(str(tiny_bert_dir), "float32", "cpu").spec)
    assert patch.metrics and patch.trainer["method"] == "bitfit" and patch.created_at
    assert evaluate_patch(patch, data, str(tiny_bert_dir)) == patch.metrics


class Interrupted(Exception):
    pass


class InterruptAfterEpoch(TrainerCallback):
    """Stands in for a run that was killed right after an epoch checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        if state.epoch >= 2:
            raise Interrupted


def test_resume_goes_on_from_last_epoch_checkpoint(tiny_bert_dir, tmp_path, monkeypatch):
    data = toy_sentiment(seed=3)
    whole = train(settings_for(tiny_bert_dir, tmp_path / "whole.safetensors"), data)
    make_trainer = train_module._make_trainer

    def interrupting(*args):
        trainer = make_trainer(*args)
        trainer.add_callback(InterruptAfterEpoch())
        return trainer

    out = tmp_path / "resumed.safetensors"
    monkeypatch.setattr(train_module, "_make_trainer", interrupting)
    with pytest.raises(Interrupted):
        train(settings_for(tiny_bert_dir, out, resume=True), data)
    assert not out.exists()
    monkeypatch.setattr(train_module, "_make_trainer", make_trainer)
    with pytest.raises(ValueError, match=r"started with other settings \(epochs 4 -> 5\)"):
        train(settings_for(tiny_bert_dir, out, resume=True, epochs=5), data)
    resumed = train(settings_for(tiny_bert_dir, out, resume=True), data)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-16")
    assert resumed.metrics == whole.metrics
    assert_patches_equal(read_patch(out), read_patch(whole.out))


def assert_patches_equal(a, b):
    assert a.biases.keys() == b.biases.keys()
    for name in a.biases:
        torch.testing.assert_close(a.biases[name], b.biases[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(a.head_weight, b.head_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.head_bias, b.head_bias, rtol=0, atol=1e-6)


def test_bias_term_presets_and_frozen(tiny_bert_dir, tmp_path):
    names = bias_names(AutoModel.from_pretrained(tiny_bert_dir), parse_bias_terms("bq+bm2"))
    assert names and all("query" in n or "intermediate" in n for n in names)
    with pytest.raises(ValueError, match="unknown bias terms"):
        parse_bias_terms("query,nonsense")
    out = tmp_path / "q.safetensors"
    train(settings_for(tiny_bert_dir, out, bias_terms="bq+bm2", epochs=1), toy_sentiment())
    assert set(read_patch(out).biases) == set(names)
    frozen = tmp_path / "f.safetensors"
    train(settings_for(tiny_bert_dir, frozen, method="frozen", epochs=1), toy_sentiment())
    assert read_patch(frozen).biases == {}


def test_cli_train_user_file_then_eval(tiny_bert_dir, tmp_path, capsys):
    data = toy_sentiment(seed=2)
    lines = [json.dumps({"text": e.text, "label": e.label}) for e in data.train + data.dev]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    common = [
        "--file",
        str(tmp_path / "d.jsonl"),
        "--dev-split",
        "0.25",
        "--backbone",
        str(tiny_bert_dir),
    ]
    out = str(tmp_path / "cli.safetensors")
    with pytest.raises(SystemExit) as done:
        cli_main(
            [
                "train",
                *common,
                "--out",
                out,
                "--epochs",
                "1",
                "--lr",
                "0.01",
                "--task",
                "cli-task",
                "--max-length",
                "32",
            ]
        )
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        cli_main(["eval", out, *common])
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["metrics"] == report["recorded"] and report["task"] == "cli-task"


def test_cli_reports_bad_data_clearly(tmp_path, capsys):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(SystemExit) as done:
        cli_main(["train", "--file", str(tmp_path / "e.csv"), "--out", str(tmp_path / "x")])
    assert done.value.code == 2
    assert "e.csv: the file is empty" in capsys.readouterr().err


def test_inspect_table_and_heatmap(tiny_bert_dir, tmp_path, capsys):
    from bitpatch.patches.backbone import load_backbone

    from tiny import random_patch

    backbone = load_backbone(str(tiny_bert_dir), "float32", "cpu")
    random_patch(backbone.model, "i", 2, "cls", seed=3).save(tmp_path / "i.safetensors")
    with pytest.raises(SystemExit) as done:
        cli_main(
            [
                "inspect",
                str(tmp_path / "i.safetensors"),
                "--backbone",
                str(tiny_bert_dir),
                "--plot",
                str(tmp_path / "heat.png"),
            ]
        )
    assert done.value.code == 0
    table = capsys.readouterr().out
    for component in ("query", "intermediate", "output-layernorm", "pooler"):
        assert component in table
    assert (tmp_path / "heat.png").read_bytes()[:4] == b"\x89PNG"


def test_results_table_from_saved_runs(tmp_path):
    from bitpatch.trainer.results import load_runs, minutes_table, table

    for seed, acc in enumerate((60.0, 62.0)):
        run = {
            "task": "rte",
            "method": "bitfit",
            "bias_terms": "all",
            "seed": seed,
            "metrics": {"accuracy": acc},
            "seconds": 120,
            "seconds_valid": seed == 0,  # a disturbed run's time stays out of the timing table
            "trainable_percent": 0.118,
            "command": f"bitpatch train --glue rte --seed {seed}",
        }
        (tmp_path / f"rte-{seed}.json").write_text(json.dumps(run))
    longer = {**run, "epochs": 16, "metrics": {"accuracy": 70.0}, "command": "... --epochs 16"}
    (tmp_path / "rte-e16.json").write_text(json.dumps(longer))
    text = table(load_runs(tmp_path))
    assert "| BitFit | 61.0 ± 1.4 (n=2) |" in text and "0.118" in text
    assert "| BitFit, 16 epochs | 70.0 ± 0.0 (n=1) |" in text  # its own row, not averaged in
    assert "| BitFit | 2.0 (n=1) | - |" in minutes_table(load_runs(tmp_path))
    on_gpu = {**run, "seed": 5, "seconds_valid": True, "hardware": "cuda: NVIDIA H100"}
    (tmp_path / "rte-gpu.json").write_text(json.dumps({**on_gpu, "seconds": 30}))
    runs = load_runs(tmp_path)  # a GPU run counts as a seed, and its time only on the GPU table
    assert "| BitFit | 61.3 ± 1.2 (n=3) |" in table(runs)
    assert "| BitFit | 2.0 (n=1) | - |" in minutes_table(runs)
    assert "| BitFit | 0.5 (n=1) | - |" in minutes_table(runs, gpu=True)


def test_cli_train_push_uses_the_environment_token(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    from bitpatch.testing import ServerProcess

    data = toy_sentiment(seed=3)
    lines = [json.dumps({"text": e.text, "label": e.label}) for e in data.train + data.dev]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    argv = ["train", "--file", str(tmp_path / "d.jsonl"), "--backbone", str(tiny_bert_dir)]
    argv += ["--out", str(tmp_path / "p.safetensors"), "--epochs", "1", "--task", "pushed"]
    argv += ["--max-length", "32"]
    token = "train-push-token"
    store = tmp_path / "store"
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--admin-token", token) as srv:
        with pytest.raises(SystemExit) as refused:
            cli_main([*argv, "--push", srv.url])
        assert refused.value.code == 1
        err = capsys.readouterr().err
        assert "401" in err and "Traceback" not in err
        monkeypatch.setenv("BITPATCH_ADMIN_TOKEN", token)
        with pytest.raises(SystemExit) as pushed:
            cli_main([*argv, "--push", srv.url])
        assert pushed.value.code == 0
        reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert reply["task"] == "pushed" and reply["version"] == 1
        assert reply["created"] is True  # its golden examples agreed with the server's answers
        pushed = read_patch(tmp_path / "p.safetensors")
        examples = pushed.examples
        texts = {e.text for e in data.train + data.dev}
        assert len(examples) == 8 and all(e["input"] in texts for e in examples)
        body = {"inputs": [examples[0]["input"]]}
        answer = httpx.post(f"{srv.url}/tasks/pushed/predict", json=body, timeout=30)
        got, want = answer.json()["predictions"][0], examples[0]["output"]
        assert got["label"] == want["label"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    assert pushed.inputs == "text"  # trained on single texts


TOPICS = {"animal": ["cat", "dog"], "color": ["red", "blue", "green"], "sky": ["sun", "moon"]}


def toy_topics(n: int = 160, seed: int = 0) -> list[dict]:
    """Each text mentions 0-3 topics (a learnable multi-label task): one row per text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topics = [t for t in TOPICS if rng.random() < 0.4]
        words = [rng.choice(TOPICS[t]) for t in topics] + rng.sample(["the", "a", "is", "it"], 2)
        rng.shuffle(words)
        rows.append(
            {
                "text": " ".join(words),
                "labels": "|".join(topics),
                **{t: int(t in topics) for t in TOPICS},
            }
        )
    return rows


@pytest.mark.parametrize("layout", ["separator", "columns"])
def test_cli_trains_multi_label_with_a_dev_threshold(tiny_bert_dir, tmp_path, capsys, layout):
    rows = toy_topics()
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    labels = ["--label-column", "labels", "--label-sep", "|"]
    if layout == "columns":
        labels = ["--label-columns", "animal,color,sky"]
    out = tmp_path / "topics.safetensors"
    common = [
        "--file",
        str(tmp_path / "d.jsonl"),
        "--dev-split",
        "0.25",
        "--backbone",
        str(tiny_bert_dir),
    ]
    argv = ["train", *common, *labels, "--kind", "multi_label", "--out", str(out)]
    argv += ["--epochs", "20", "--lr", "0.05", "--max-length", "16", "--batch-size", "8"]
    with pytest.raises(SystemExit) as done:
        cli_main(argv)
    assert done.value.code == 0
    patch = read_patch(out)
    assert patch.kind == "multi_label" and patch.labels == ["animal", "color", "sky"]
    assert 0.05 <= patch.threshold <= 0.95 and patch.thresholds is None
    # chance: labels drawn with p=0.4, so predicting "every label" scores micro F1 ~57
    assert patch.metrics["micro_f1"] > 80, patch.metrics
    with pytest.raises(SystemExit) as done:
        cli_main(["eval", str(out), *common, *labels, "--kind", "multi_label"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["metrics"] == report["recorded"]  # scored at the patch's own threshold


PEOPLE = [["ada", "lovelace"], ["alan", "turing"], ["grace", "hopper"], ["linus"]]
PLACES = [["paris"], ["london"], ["new", "york"]]


def toy_tagged(n: int = 120, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences of vocabulary words (O) around a person (B-PER I-PER) and maybe a place."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        parts = [[(w, "O") for w in rng.sample(["the", "man", "sat", "on", "a", "mat"], 2)]]
        for names, kind in ((rng.choice(PEOPLE), "PER"), (rng.choice(PLACES), "LOC")):
            parts.append([(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(names)])
            parts.append([(w, "O") for w in rng.sample(["was", "in", "it", "is", "and"], 1)])
        sentences.append([pair for part in parts for pair in part])
    return sentences


def test_cli_trains_a_tagger_from_conll_and_eval_agrees(tiny_bert_dir, tmp_path, capsys):
    sentences = toy_tagged()
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [f"{word}\t{tag}" for word, tag in sentence] + [""]
    conll = tmp_path / "names.conll"
    conll.write_text("\n".join(lines))
    out = tmp_path / "names.safetensors"
    common = ["--file", str(conll), "--dev-split", "0.25", "--backbone", str(tiny_bert_dir)]
    argv = ["train", *common, "--out", str(out), "--epochs", "10", "--lr", "0.05"]
    with pytest.raises(SystemExit) as done:
        cli_main([*argv, "--max-length", "24", "--batch-size", "8"])
    assert done.value.code == 0
    patch = read_patch(out)
    assert patch.kind == "token_classification" and patch.pooling == "none"
    assert patch.labels[0] == "O" and {"B-PER", "I-PER", "B-LOC", "I-LOC"} <= set(patch.labels)
    assert patch.metrics["entity_f1"] > 70, patch.metrics  # chance: near 0
    assert patch.examples and all("tokens" in e["output"] for e in patch.examples)
    with pytest.raises(SystemExit) as done:
        cli_main(["eval", str(out), *common])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["metrics"] == report["recorded"]


def test_tagging_data_from_a_datasets_builder(tmp_path):
    from bitpatch.trainer.conll import load_hf_tagging, read_conll

    rows = [{"tokens": [w for w, _ in s], "ner_tags": [t for _, t in s]} for s in toy_tagged(20)]
    for split, part in (("train", rows[:15]), ("validation", rows[15:])):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation")}
    data = load_hf_tagging("json", None, data_files=files)
    assert data.kind == "token_classification" and len(data.train) == 15
    assert data.train[0].words == tuple(rows[0]["tokens"])
    assert data.train[0].text == " ".join(rows[0]["tokens"])
    (tmp_path / "bad.conll").write_text("word_without_tag\n")
    with pytest.raises(ValueError, match=r"bad.conll:1: expected 'token<TAB>tag'"):
        read_conll(tmp_path / "bad.conll")


def toy_pairs(n: int = 160, seed: int = 0, scored: bool = True) -> list[dict]:
    """Scored: short texts whose 0-5 score is the share of topics they have in common.
    Unscored: each text's pair holds its content words in another order, other fillers."""
    rng = random.Random(seed)
    rows = []
    content = [w for w in WORDS if w not in ("the", "a", "is", "it", "and", "on")]
    for _ in range(n):
        if not scored:
            words = rng.sample(content, 3)
            pair = rng.sample(words, 3) + [rng.choice(["it", "and", "on"])]
            rows.append({"text": " ".join([*words, "the"]), "other": " ".join(pair)})
            continue
        a, b = (set(rng.sample(list(TOPICS), rng.randint(1, 2))) for _ in range(2))
        if rng.random() < 0.3:
            b = set(a)
        words = [[rng.choice(TOPICS[t]) for t in sorted(s)] + ["the", "is"] for s in (a, b)]
        for w in words:
            rng.shuffle(w)
        score = 5 * len(a & b) / len(a | b)  # the STS-B 0-5 scale
        rows.append({"text": " ".join(words[0]), "other": " ".join(words[1]), "score": score})
    return rows


@pytest.mark.parametrize("scored", [True, False], ids=["scored", "in-batch-negatives"])
def test_embedding_patch_beats_the_frozen_backbone(tiny_bert_dir, tmp_path, capsys, scored):
    (tmp_path / "pairs.jsonl").write_text(
        "\n".join(json.dumps(r) for r in toy_pairs(scored=scored))
    )
    common = ["--file", str(tmp_path / "pairs.jsonl"), "--pair-column", "other"]
    common += ["--label-column", "score", "--kind", "embedding", "--dev-split", "0.25"]
    common += ["--backbone", str(tiny_bert_dir)]
    runs = {}
    for method, extra in (("frozen", []), ("bitfit", ["--epochs", "10", "--lr", "0.02"])):
        extra = [*extra, "--max-length", "16"]
        out = tmp_path / f"{method}.safetensors"
        with pytest.raises(SystemExit) as done:
            cli_main(["train", *common, "--method", method, "--out", str(out), *extra])
        assert done.value.code == 0
        runs[method] = read_patch(out)
    frozen, bitfit = runs["frozen"], runs["bitfit"]
    assert frozen.kind == bitfit.kind == "embedding" and frozen.biases == {}
    assert frozen.head_weight is None and bitfit.head_weight is None and bitfit.normalize
    if scored:  # chance: 0
        assert bitfit.metrics["spearman"] > frozen.metrics["spearman"] + 5, bitfit.metrics
    else:  # chance: 1 in 40 (the dev pairs)
        accuracy = bitfit.metrics["retrieval_accuracy"]
        assert accuracy > 50 and accuracy >= frozen.metrics["retrieval_accuracy"], bitfit.metrics
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli_main(["eval", str(tmp_path / "bitfit.safetensors"), *common])
    printed = capsys.readouterr()
    assert done.value.code == 0, printed.err
    report = json.loads(printed.out.strip().splitlines()[-1])
    assert report["metrics"] == report["recorded"]


def test_multi_label_data_from_a_datasets_builder(tmp_path):
    from bitpatch.trainer.data import Columns, load_hf_dataset

    rows = [{"text": r["text"], "tags": [t for t in TOPICS if r[t]]} for r in toy_topics(40)]
    for split, part in (("train", rows[:30]), ("validation", rows[30:])):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation")}
    data = load_hf_dataset("json", None, Columns(label="tags"), "multi_label", data_files=files)
    assert data.kind == "multi_label" and data.labels == sorted(TOPICS)
    assert data.train[0].label == tuple(rows[0]["tags"])


def test_entity_f1_counts_exact_spans():
    from bitpatch.trainer.metrics import entity_f1, entity_spans

    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER"]) == {
        ("PER", 0, 1),
        ("LOC", 3, 4),
        ("LOC", 5, 5),
        ("PER", 6, 6),
    }
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # 2 of 3 found, 2 of 3 right
    assert entity_f1(predicted, gold) == pytest.approx(100 * 2 / 3)
    assert entity_f1(gold, gold) == 100.0 and entity_f1([["O"]], [["B-X"]]) == 0.0


def test_train_fraction_is_trained_and_recorded(tiny_bert_dir, tmp_path, capsys):
    data = toy_sentiment(n=96, seed=4)
    lines = [json.dumps({"text": e.text, "label": e.label}) for e in data.train]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    out, summary = tmp_path / "f.safetensors", tmp_path / "f.json"
    args = ["train", "--file", str(tmp_path / "d.jsonl"), "--backbone", str(tiny_bert_dir)]
    args += ["--out", str(out), "--epochs", "1", "--max-length", "32", "--train-fraction", "0.25"]
    with pytest.raises(SystemExit) as done:
        cli_main([*args, "--metrics-out", str(summary)])
    assert done.value.code == 0
    recipe = read_patch(out).trainer
    assert recipe["train_fraction"] == 0.25
    after_dev_split = len(data.train) - int(len(data.train) * 0.1)
    assert abs(recipe["train_examples"] - after_dev_split * 0.25) <= 1  # rounded per label
    assert json.loads(summary.read_text())["train_fraction"] == 0.25


def test_train_fraction_outside_zero_one_is_a_clear_error(tiny_bert_dir, tmp_path, capsys):
    data = toy_sentiment(n=40)
    (tmp_path / "d.jsonl").write_text(
        "\n".join(json.dumps({"text": e.text, "label": e.label}) for e in data.train)
    )
    args = ["train", "--file", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as done:
        cli_main([*args, "--train-fraction", "1.5"])
    assert done.value.code == 2
    assert "--train-fraction must be in (0, 1], got 1.5" in capsys.readouterr().err
