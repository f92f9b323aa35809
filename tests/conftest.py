"""Shared fixtures: tiny backbones saved to disk, and the GLUE folder when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bitpatch.testing import MotoServer

sys.path.insert(0, str(Path(__file__).parent))

from tiny import save_tiny  # noqa: E402

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "glue"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Compiled forwards (and anything else cached) go to a folder of this test run."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API server (moto's standalone server) on 127.0.0.1, with the AWS variables a
    bitpatch process needs to reach it."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_url(s3_server, request) -> str:
    """s3://<a fresh bucket>/patches on the moto server."""
    return s3_server.bucket_url(request.node.name)


@pytest.fixture(scope="session")
def protocol_server(tiny_bert_dir, tmp_path_factory):
    """One real server with the native API, v2 REST, v2 gRPC and OpenAI routes, both tokens
    set, and a task of each kind (two versions of `cls`); see tests/protocols.py."""
    from protocols import start_protocol_server

    with start_protocol_server(tiny_bert_dir, tmp_path_factory.mktemp("protocols")) as server:
        yield server
