"""Realistic inputs: sentences and pairs from ../shared/glue (synthetic text when absent)."""

from __future__ import annotations

import os
import random
from pathlib import Path

GLUE = Path(
    os.environ.get("BITPATCH_GLUE", Path(__file__).resolve().parents[1].parent / "shared" / "glue")
)


def _column(path: Path, index: int, header: bool = True) -> list[str]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8-sig").split("\n")[1 if header else 0 :]
    return [f[index].strip() for line in lines if len(f := line.split("\t")) > index]


def glue_sentences(n: int, seed: int = 0) -> list[str]:
    """n sentences (SST-2 and CoLA dev, then train), repeated if needed."""
    pool = _column(GLUE / "SST-2" / "dev.tsv", 0) + _column(GLUE / "CoLA" / "dev.tsv", 3, False)
    pool += _column(GLUE / "SST-2" / "train.tsv", 0)[:5000]
    if not pool:
        words = [
            "the",
            "film",
            "was",
            "a",
            "quiet",
            "and",
            "moving",
            "story",
            "about",
            "friends",
            "who",
            "never",
            "met",
        ]
        rng = random.Random(seed)
        pool = [" ".join(rng.choices(words, k=rng.randint(5, 25))) for _ in range(500)]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]


def glue_pairs(n: int, seed: int = 0) -> list[list[str]]:
    """n sentence pairs (MRPC, STS-B, RTE dev)."""
    a = _column(GLUE / "MRPC" / "dev.tsv", 3) + _column(GLUE / "STS-B" / "dev.tsv", 7)
    b = _column(GLUE / "MRPC" / "dev.tsv", 4) + _column(GLUE / "STS-B" / "dev.tsv", 8)
    pool = [[x, y] for x, y in zip(a, b, strict=False)]
    if not pool:
        sentences = glue_sentences(2 * n, seed)
        pool = [[sentences[2 * i], sentences[2 * i + 1]] for i in range(n)]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]


def mixed_inputs(n: int, seed: int = 0, pair_fraction: float = 0.3) -> list:
    """A request stream's inputs: mostly single sentences, some pairs."""
    rng = random.Random(seed)
    singles, pairs = glue_sentences(n, seed), glue_pairs(n, seed)
    return [pairs[i] if rng.random() < pair_fraction else singles[i] for i in range(n)]
