"""The OpenAI-compatible embeddings route against a real server, through the unmodified
`openai` client: vectors equal the native predict, usage counts tokens, errors take OpenAI's
shape."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from transformers import AutoTokenizer

from protocols import PREDICT, TEXTS, ProtocolServer, auth


@pytest.fixture(scope="module")
def server(protocol_server) -> ProtocolServer:
    return protocol_server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=PREDICT, max_retries=0) as c:
        yield c


def test_embeddings_equal_native_in_both_formats(client, server, tiny_bert_dir):
    expected = [p["embedding"] for p in server.native("embed", TEXTS)]
    default = client.embeddings.create(model="embed", input=TEXTS)  # the client asks base64
    floats = client.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    for reply in (default, floats):
        assert reply.model == "embed" and [d.index for d in reply.data] == [0, 1, 2]
        np.testing.assert_allclose([d.embedding for d in reply.data], expected, atol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokens = sum(len(ids) for ids in tokenizer(TEXTS)["input_ids"])  # special tokens included
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens


def test_a_single_string_and_matching_dimensions(client, server):
    reply = client.embeddings.create(model="embed", input=TEXTS[0], dimensions=8)
    expected = server.native("embed", TEXTS[:1])[0]["embedding"]
    np.testing.assert_allclose(reply.data[0].embedding, expected, atol=1e-6)


def test_models_lists_every_task(client, server):
    ids = sorted(m.id for m in client.models.list())
    tasks = sorted(t["task"] for t in server.http.get("/tasks", headers=auth()).json()["tasks"])
    assert ids == tasks
    assert client.models.retrieve("embed").owned_by == "bitpatch"


def test_models_page_with_openais_list_fields(server):
    everything = server.http.get("/v1/models", headers=auth()).json()
    assert everything["has_more"] is False
    seen, after = [], ""
    while True:
        page = server.http.get("/v1/models", params={"limit": 2, "after": after}, headers=auth())
        body = page.json()
        seen += [m["id"] for m in body["data"]]
        assert body["first_id"] == body["data"][0]["id"] and body["last_id"] == seen[-1]
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert seen == [m["id"] for m in everything["data"]] == sorted(seen)


def openai_error(reply: httpx.Response, status: int, param, code, *words) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]


def test_errors_have_openais_shape(server):
    def post(body, headers=None):
        return server.http.post("/v1/embeddings", json=body, headers=headers or auth())

    openai_error(
        post({"model": "cls", "input": "a"}),
        400,
        "model",
        "wrong_task_kind",
        "classification task",
        "'embedding'",
    )
    openai_error(
        post({"model": "embed", "input": "a", "dimensions": 4}),
        400,
        "dimensions",
        "unsupported_dimensions",
        "8-dimensional",
    )
    openai_error(post({"model": "nope", "input": "a"}), 404, None, "model_not_found", "'nope'")
    openai_error(
        post({"model": "embed", "input": [1, 2]}),
        400,
        "input",
        "invalid_request",
        "token-id arrays",
    )
    openai_error(post({"model": "embed", "input": ["a"] * 9}), 400, "input", "too_many_inputs")
    openai_error(
        post({"model": "embed", "input": "a", "encoding_format": "int8"}),
        400,
        "encoding_format",
        "invalid_request",
    )
    openai_error(post({"model": "embed", "input": "a", "n": 2}), 400, "n", "invalid_request")
    missing = server.http.post("/v1/embeddings", json={"model": "embed", "input": "a"})
    openai_error(missing, 401, None, "unauthorized", "Bearer")
    assert missing.json()["error"]["type"] == "authentication_error"


def test_the_client_raises_with_the_message(client):
    with pytest.raises(openai.BadRequestError, match="classification task"):
        client.embeddings.create(model="cls", input="a")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="a")
    wrong = openai.OpenAI(base_url=str(client.base_url), api_key="wrong-key", max_retries=0)
    with wrong, pytest.raises(openai.PermissionDeniedError):
        wrong.embeddings.create(model="embed", input="a")


def test_openai_requests_are_counted(server):
    text = server.http.get("/metrics").text
    assert 'api="openai",status="200",task="embed"' in text
    assert 'api="openai",status="400",task="cls"' in text
