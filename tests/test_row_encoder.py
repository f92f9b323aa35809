"""RowEncoder gives exactly the rows of encode_inputs (transformers' tokenizer call): ids, type
ids, truncation of texts and pairs, offsets and word ids."""

from __future__ import annotations

import random

import pytest

from bitpatch.patches.encoding import encode_inputs
from bitpatch.patches.row_encoder import RowEncoder

from tiny import make_tokenizer, random_sentence


def random_items(rng: random.Random) -> list:
    items = []
    for _ in range(rng.randint(1, 5)):
        text = " ".join(random_sentence(rng) for _ in range(rng.randint(1, 6)))
        pair = random_sentence(rng) * rng.randint(1, 4)
        items.append(text if rng.random() < 0.5 else [text, pair])
    return items


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_rows_equal_encode_inputs(family):
    tokenizer = make_tokenizer(family)
    encoder, rng = RowEncoder(tokenizer), random.Random(7)
    for _ in range(150):
        items, max_length, offsets = random_items(rng), rng.choice([8, 16, 48]), rng.random() < 0.5
        assert encoder.encode(items, max_length, offsets) == encode_inputs(
            tokenizer, items, max_length, offsets
        )
    assert ("token_type_ids" in encoder.encode(["a b"], 8)[0]) == (family == "bert")
