"""Shared fixtures: tiny backbones saved to disk, and the GLUE folder when present."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import save_tiny  # noqa: E402

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "glue"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT + tokenizer saved as a local model folder."""
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    """A tiny random RoBERTa + tokenizer saved as a local model folder."""
    return save_tiny("roberta", tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """../shared/glue, or skip."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR
