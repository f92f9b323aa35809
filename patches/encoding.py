"""Tokenizing inputs (single texts or pairs) and padding rows of mixed tasks into one batch."""

from __future__ import annotations

from typing import Any

import torch

Item = str | tuple[str, str] | list[str]
# input_ids, token_type_ids; for token tasks also text, offsets ([start, end) per token) and
# word_ids (the word of each token, None for special tokens)
EncodedRow = dict[str, Any]


def split_pairs(items: list[Item]) -> tuple[list[str], list[str] | None]:
    """Texts and text pairs as the tokenizer takes them; all items single or all pairs."""
    if all(isinstance(x, str) for x in items):
        return list(items), None
    return [x[0] for x in items], [x[1] for x in items]


def encode_inputs(
    tokenizer, items: list[Item], max_length: int, offsets: bool = False
) -> list[EncodedRow]:
    """`tokenizer(text, text_pair, truncation=True, max_length=...)` for each item, unpadded;
    with `offsets`, each single text's words and character offsets too (token tasks)."""
    singles = [i for i, x in enumerate(items) if isinstance(x, str)]
    pairs = [i for i, x in enumerate(items) if not isinstance(x, str)]
    by_index: dict[int, EncodedRow] = {}
    for group in (singles, pairs):
        if not group:
            continue
        texts, text_pairs = split_pairs([items[i] for i in group])
        with_offsets = offsets and text_pairs is None
        enc = tokenizer(
            texts,
            text_pairs,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=with_offsets,
        )
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        for j, i in enumerate(group):
            by_index[i] = {k: enc[k][j] for k in keys}
            if with_offsets:
                by_index[i].update(
                    text=texts[j], offsets=enc["offset_mapping"][j], word_ids=enc.word_ids(j)
                )
    return [by_index[i] for i in range(len(items))]


def collate(rows: list[EncodedRow], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest: input_ids, attention_mask, token_type_ids (B, T).

    Padded as Python lists and converted once per field: a server worker then makes three
    torch calls per batch instead of several per row (each call gives up and retakes the GIL).
    """
    length = max(len(r["input_ids"]) for r in rows)
    pad = pad_id if pad_id is not None else 0

    def padded(key: str, fill: int) -> torch.Tensor:
        return torch.tensor([r[key] + [fill] * (length - len(r[key])) for r in rows])  # (B, T)

    batch = {
        "input_ids": padded("input_ids", pad),
        "attention_mask": torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (length - len(r["input_ids"])) for r in rows]
        ),
    }
    if "token_type_ids" in rows[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    return batch
