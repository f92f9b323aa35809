"""Tiny deterministic BERT/RoBERTa backbones, tokenizers and random patches for tests."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, BertConfig, PreTrainedTokenizerFast, RobertaConfig

from bitpatch.patches.backbone import fingerprint
from bitpatch.patches.patch_file import PatchFile

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "great",
    "bad",
    "good",
    "terrible",
    "fine",
    "not",
    "very",
    "it",
    "is",
    "and",
    "but",
    "plot",
    "actors",
    "dull",
    "funny",
    "sad",
    "happy",
    "love",
    "hate",
    "boring",
    "story",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "man",
    "woman",
    "runs",
    "fast",
    "slow",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "house",
    "car",
    "tree",
    "sun",
    "moon",
    "day",
    "night",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer over a small vocabulary, BERT-style special tokens."""
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab_list = SPECIALS + WORDS + letters + [f"##{c}" for c in letters]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    names = ["input_ids", "attention_mask"]
    if family == "bert":
        names.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=names,
    )


def make_config(family: str, vocab_size: int):
    """A 2-layer, hidden-32 config; dropout stays in the config (eval mode turns it off)."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    if family == "bert":
        return BertConfig(**common)
    return RobertaConfig(
        **common, pad_token_id=0, bos_token_id=2, eos_token_id=3, type_vocab_size=1
    )


def make_model(family: str, seed: int = 0):
    """A deterministic tiny model; biases are randomised so they are not all zero."""
    tokenizer = make_tokenizer(family)
    torch.manual_seed(seed)
    model = AutoModel.from_config(make_config(family, len(tokenizer)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model.eval(), tokenizer


def save_tiny(family: str, folder: Path) -> Path:
    """Write a tiny model + tokenizer to `folder` (loadable with AutoModel/AutoTokenizer)."""
    model, tokenizer = make_model(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_patch(
    model,
    task: str,
    num_labels: int,
    pooling: str,
    seed: int,
    fraction: float = 1.0,
    max_length: int = 48,
) -> PatchFile:
    """Random biases on all (or a random fraction of) bias terms and a random head."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    biases = {}
    for name, param in model.named_parameters():
        if name.endswith("bias") and rng.random() < fraction:
            biases[name] = param.detach().float() + 0.5 * torch.randn(param.shape, generator=gen)
    kind = "regression" if num_labels == 1 else "classification"
    labels = [f"label_{i}" for i in range(num_labels)] if kind == "classification" else []
    hidden = model.config.hidden_size
    return PatchFile(
        task=task,
        kind=kind,
        labels=labels,
        pooling=pooling,
        max_length=max_length,
        backbone="tiny",
        backbone_sha256=fingerprint(model),
        biases=biases,
        head_weight=torch.randn((num_labels, hidden), generator=gen),
        head_bias=torch.randn((num_labels,), generator=gen),
    )


def random_sentence(rng: random.Random) -> str:
    """A sentence of 1-20 vocabulary words."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))


def kind_patch(model, kind: str, task: str, seed: int, max_length: int = 48) -> PatchFile:
    """A random patch of any task kind (see docs/patch-format.md)."""
    base = random_patch(model, task, 3, "cls", seed, max_length=max_length)
    gen = torch.Generator().manual_seed(seed + 1000)
    hidden = model.config.hidden_size
    if kind in ("classification", "regression"):
        n = 3 if kind == "classification" else 1
        return random_patch(model, task, n, "mean", seed, max_length=max_length)
    if kind == "multi_label":
        return replace(
            base, kind=kind, labels=["toxic", "insult", "spam"], thresholds=[0.3, 0.5, 0.7]
        )
    if kind == "token_classification":
        labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        return replace(
            base,
            kind=kind,
            labels=labels,
            pooling="none",
            head_weight=torch.randn((len(labels), hidden), generator=gen),
            head_bias=torch.randn((len(labels),), generator=gen),
        )
    if kind == "embedding":
        return replace(
            base,
            kind=kind,
            labels=[],
            pooling="mean",
            head_weight=torch.randn((8, hidden), generator=gen),
            head_bias=torch.randn((8,), generator=gen),
        )
    raise ValueError(kind)


def patched_model(folder, patch):
    """Plain transformers model (float32, eval) of `folder` with the patch's biases copied in,
    and its tokenizer: the reference a patched engine row must equal."""
    from transformers import AutoTokenizer

    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in patch.biases.items():
            params[name].copy_(value)
    return model, AutoTokenizer.from_pretrained(folder)
