"""Every task kind in one mixed forward: each row equals plain transformers with its task's
biases copied in; and the predictions each kind's rows become."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from bitpatch.patches.backbone import default_backbone_path, load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine, TaskHead
from bitpatch.patches.kinds import kind_named
from bitpatch.patches.outputs import to_prediction, to_predictions
from bitpatch.patches.patch_file import decode_patch

from tiny import kind_patch, patched_model, random_sentence

KINDS = ("classification", "regression", "multi_label", "token_classification", "embedding")


def reference(folder, patch, text: str) -> torch.Tensor:
    """Plain transformers with the patch's biases; the kind's head by hand."""
    model, tokenizer = patched_model(folder, patch)
    with torch.no_grad():
        enc = tokenizer(text, truncation=True, max_length=patch.max_length, return_tensors="pt")
        hidden = model(**enc).last_hidden_state[0]  # (T, H)
        if patch.kind == "token_classification":
            return hidden @ patch.head_weight.T + patch.head_bias  # (T, n)
        pooled = {"cls": hidden[0], "mean": hidden.mean(0)}[patch.pooling]
        if patch.head_weight is None:
            out = pooled
        else:
            out = pooled @ patch.head_weight.T + patch.head_bias
        if patch.kind == "embedding" and patch.normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out


def engine_with_every_kind(folder, forward: str = "auto"):
    engine = MultiTaskEngine(load_backbone(str(folder), dtype="float32", device="cpu"), forward)
    model = engine.backbone.model
    length = min(48, engine.backbone.spec.max_positions)
    patches = [
        kind_patch(model, kind, kind, seed=i, max_length=length) for i, kind in enumerate(KINDS)
    ]
    frozen = replace(patches[-1], task="frozen", biases={}, head_weight=None, head_bias=None)
    patches.append(frozen)
    for patch in patches:
        patch = decode_patch(patch.to_bytes())  # every kind survives its file format
        engine.register(patch.task, patch)
    return engine, patches


def mixed_forward(engine, patches, rows: list[tuple[int, str]]):
    """One forward of rows of every kind; per row its head's output without batch padding."""
    tok = engine.backbone.tokenizer
    heads = engine.state.heads
    encoded = [
        encode_inputs(tok, [text], patches[t].max_length, heads[patches[t].task].wants_offsets)[0]
        for t, text in rows
    ]
    out = engine.forward(collate(encoded, tok.pad_token_id), [patches[t].task for t, _ in rows])
    return [
        x[: len(e["input_ids"])] if patches[t].kind == "token_classification" else x
        for (t, _), x, e in zip(rows, out, encoded, strict=True)
    ], encoded


@pytest.fixture(params=["padded", "packed", "onnxruntime"])
def forward(request) -> str:
    return request.param


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_a_batch_of_every_kind_equals_each_task_alone(family_dir, forward, request):
    folder = request.getfixturevalue(family_dir)
    engine, patches = engine_with_every_kind(folder, forward)
    rng = random.Random(3)
    rows = [(i % len(patches), random_sentence(rng)) for i in range(24)]
    got, _ = mixed_forward(engine, patches, rows)
    for (t, text), value in zip(rows, got, strict=True):
        torch.testing.assert_close(value, reference(folder, patches[t], text), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_every_kind_on_the_default_backbone(forward):
    folder = default_backbone_path()
    engine, patches = engine_with_every_kind(folder, forward)
    rows = [(t, f"Ada Lovelace wrote to Charles Babbage from London, note {t}.") for t in range(6)]
    got, _ = mixed_forward(engine, patches, rows * 2)
    for (t, text), value in zip(rows * 2, got, strict=True):
        torch.testing.assert_close(value, reference(folder, patches[t], text), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_frozen_embedding_is_the_sentence_transformers_definition():
    """all-MiniLM-L6-v2 as sentence-transformers computes it: mean of the token states over
    the attention mask, then L2 normalisation."""
    folder = default_backbone_path()
    engine, patches = engine_with_every_kind(folder)
    texts = ["A man is playing a guitar.", "short", "the quick brown fox jumps over the dog"]
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state  # (B, T, H)
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = torch.stack(engine.predict_logits("frozen", texts))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def head(kind: str, labels: tuple[str, ...], thresholds: tuple[float, ...] = ()) -> TaskHead:
    return TaskHead(kind_named(kind), labels, "none", 32, None, None, thresholds=thresholds)


def test_multi_label_takes_each_label_at_its_threshold():
    h = head("multi_label", ("toxic", "insult", "spam"), (0.3, 0.5, 0.9))
    logits = torch.logit(torch.tensor([0.35, 0.5, 0.89]))
    prediction = to_prediction(h, logits)
    assert prediction["labels"] == ["toxic", "insult"]
    assert prediction["scores"]["spam"] == pytest.approx(0.89)


def token_rows(text: str):
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_path())
    return encode_inputs(tokenizer, [text], 64, offsets=True)[0]


def tag_logits(row, tags_by_word: list[int], n: int) -> torch.Tensor:
    """(T, n) logits whose argmax for every sub-token of word w is tags_by_word[w]."""
    logits = torch.full((len(row["input_ids"]), n), -5.0)
    for j, word in enumerate(row["word_ids"]):
        if word is not None:
            logits[j, tags_by_word[word]] = 5.0
    return logits


def test_tokens_are_words_with_offsets_and_bio_tags_merge_into_entities():
    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    text = "Ada Lovelace visited Llanfairpwllgwyngyll, Wales."
    row = token_rows(text)
    words = ["Ada", "Lovelace", "visited", "Llanfairpwllgwyngyll", ",", "Wales", "."]
    tags = [1, 2, 0, 3, 0, 4, 0]  # an I-LOC without a B-LOC still starts an entity
    prediction = to_predictions(
        head("token_classification", labels), tag_logits(row, tags, 5)[None], [row]
    )[0]
    assert [t["text"] for t in prediction["tokens"]] == words  # sub-tokens merged into words
    assert [t["label"] for t in prediction["tokens"]] == [labels[i] for i in tags]
    first = prediction["tokens"][3]
    assert text[first["start"] : first["end"]] == "Llanfairpwllgwyngyll"
    entities = prediction["entities"]
    assert [(e["label"], e["text"]) for e in entities] == [
        ("PER", "Ada Lovelace"),
        ("LOC", "Llanfairpwllgwyngyll"),
        ("LOC", "Wales"),
    ]
    assert entities[0]["start"] == 0 and entities[0]["end"] == len("Ada Lovelace")
    assert all(0 < e["score"] <= 1 for e in entities)


def test_offsets_count_code_points_and_tags_without_bio_have_no_entities():
    text = "Zoë café"
    row = token_rows(text)
    prediction = to_predictions(
        head("token_classification", ("NOUN", "X")), tag_logits(row, [0, 1], 2)[None], [row]
    )[0]
    assert [(t["text"], t["start"], t["end"]) for t in prediction["tokens"]] == [
        ("Zoë", 0, 3),
        ("café", 4, 8),
    ]
    assert "entities" not in prediction
