"""The HTTP edge: domain errors to status codes, and a JSON 500 for anything unexpected."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bitpatch.patches.patch_file import PatchError
from bitpatch.server import errors
from bitpatch.server.http.edge import REPLICA, STATUS, install_error_handlers, status_of


def test_every_domain_error_has_a_status():
    domain = [c for c in vars(errors).values() if isinstance(c, type)]
    for cls in domain:
        if issubclass(cls, errors.ServerError) and cls is not errors.ServerError:
            assert cls in STATUS, cls.__name__
    assert status_of(PatchError("x", code="backbone_mismatch")) == 409
    assert status_of(PatchError("x")) == 422
    assert status_of(KeyError("x")) == 500


@pytest.fixture
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom():
        raise TypeError("a bug")

    @app.get("/busy")
    async def busy():
        raise errors.Overloaded("full", headers={"Retry-After": "1"})

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_unexpected_exception_is_a_json_500(client):
    reply = client.get("/boom")
    assert reply.status_code == 500
    assert reply.json()["error"]["code"] == "internal_error"
    assert "TypeError" in reply.json()["error"]["message"]


def test_domain_error_keeps_its_headers(client):
    reply = client.get("/busy")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert reply.json() == {"error": {"code": "overloaded", "message": "full"}}


def test_every_answer_names_its_replica(client):
    for path in ("/boom", "/busy", "/missing"):
        assert client.get(path).headers["x-bitpatch-replica"] == REPLICA, path
