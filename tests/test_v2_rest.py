"""The Open Inference Protocol over REST against a real server, through the unmodified
tritonclient.http: every answer equals the native predict for the same inputs."""

from __future__ import annotations

import gzip
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from protocols import TEXTS, ProtocolServer, auth


@pytest.fixture(scope="module")
def server(protocol_server) -> ProtocolServer:
    return protocol_server


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.address) as c:
        yield c


def text_input(name: str, texts: list[str], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary)
    return tensor


def strings(array) -> list[str]:
    """A BYTES output as text (binary data gives bytes, JSON data str)."""
    return [x.decode() if isinstance(x, bytes) else x for x in array]


def infer(client, task, inputs, outputs=None, binary=True, version=""):
    wanted = [triton.InferRequestedOutput(o, binary_data=binary) for o in outputs or []]
    return client.infer(task, inputs, version, wanted or None, headers=auth())


def test_server_is_live_ready_and_describes_itself(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "bitpatch"
    assert {"model_repository", "binary_tensor_data"} <= set(meta["extensions"])


def test_model_metadata_has_kind_labels_and_versions(client, server):
    meta = client.get_model_metadata("cls", headers=auth())
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "bitpatch"
    task = server.http.get("/tasks/cls", headers=auth()).json()
    assert meta["parameters"] == {"kind": "classification", "labels": task["labels"]}
    assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
    ]
    pinned = client.get_model_metadata("cls", "1", headers=auth())
    assert pinned["versions"] == ["1"]
    embed = client.get_model_metadata("embed", headers=auth())
    assert embed["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 8]}]
    assert [i["name"] for i in embed["inputs"]] == ["text"]
    assert client.get_model_metadata("reg", headers=auth())["parameters"]["kind"] == "regression"
    assert client.is_model_ready("cls", headers=auth())
    assert client.is_model_ready("cls", "1", headers=auth())
    assert not client.is_model_ready("cls", "9", headers=auth())


def test_repository_index_lists_every_task_ready(client, server):
    index = client.get_model_repository_index(headers=auth())
    tasks = server.http.get("/tasks", headers=auth()).json()["tasks"]
    assert sorted(index, key=lambda m: m["name"]) == sorted(
        ({"name": t["task"], "version": str(t["active_version"]), "state": "READY"} for t in tasks),
        key=lambda m: m["name"],
    )
    empty = server.http.post("/v2/repository/index", headers=auth())
    assert empty.status_code == 200 and len(empty.json()) == len(tasks)


def test_repository_index_pages_through_a_link_header(server):
    everything = server.http.post("/v2/repository/index", headers=auth()).json()
    seen, path = [], "/v2/repository/index?limit=2"
    while path:
        reply = server.http.post(path, headers=auth())
        assert reply.status_code == 200 and len(reply.json()) <= 2
        assert reply.headers["x-total-count"] == str(len(everything))
        seen += reply.json()
        link = reply.headers.get("link")
        path = link.split(">")[0].lstrip("<") if link else None
        assert link is None or link.endswith('rel="next"')
    assert seen == everything and [m["name"] for m in seen] == sorted(m["name"] for m in seen)
    bad = server.http.post("/v2/repository/index?limit=0", headers=auth())
    assert bad.status_code == 400 and "limit" in bad.json()["error"]  # v2 errors are 400s


@pytest.mark.parametrize("binary", [True, False])
def test_classification_and_regression_equal_native(client, server, binary):
    result = infer(client, "cls", [text_input("text", TEXTS, binary)], ["label", "scores"], binary)
    native = server.native("cls", TEXTS)
    labels = server.http.get("/tasks/cls", headers=auth()).json()["labels"]
    assert strings(result.as_numpy("label")) == [p["label"] for p in native]
    expected = [[p["scores"][label] for label in labels] for p in native]
    np.testing.assert_allclose(result.as_numpy("scores"), expected, atol=1e-6)
    assert result.as_numpy("scores").dtype == np.float32
    value = infer(client, "reg", [text_input("text", TEXTS, binary)], ["value"], binary)
    expected = [p["value"] for p in server.native("reg", TEXTS)]
    np.testing.assert_allclose(value.as_numpy("value"), expected, atol=1e-6)


def test_all_outputs_come_back_binary_by_default(client, server):
    result = client.infer("cls", [text_input("text", TEXTS, True)], headers=auth())
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["label", "scores"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert response["model_name"] == "cls" and response["model_version"] == "2"


def test_pair_input_with_an_empty_pair_is_a_single_text(client, server):
    pairs = ["a dog ran", "", "the mat"]
    inputs = [text_input("text", TEXTS, True), text_input("text_pair", pairs, False)]
    result = infer(client, "cls", inputs, ["scores"])
    native = server.native("cls", [[TEXTS[0], pairs[0]], TEXTS[1], [TEXTS[2], pairs[2]]])
    labels = server.http.get("/tasks/cls", headers=auth()).json()["labels"]
    expected = [[p["scores"][label] for label in labels] for p in native]
    np.testing.assert_allclose(result.as_numpy("scores"), expected, atol=1e-6)


def test_a_pinned_version_answers_as_that_version(client, server):
    inputs = [text_input("text", TEXTS, True)]
    old = infer(client, "cls", inputs, ["scores"], version="1")
    assert old.get_response()["model_version"] == "1"
    labels = client.get_model_metadata("cls", "1", headers=auth())["parameters"]["labels"]
    native = server.native("cls", TEXTS, version=1)
    expected = [[p["scores"][label] for label in labels] for p in native]
    np.testing.assert_allclose(old.as_numpy("scores"), expected, atol=1e-6)
    active = infer(client, "cls", inputs, ["scores"])
    assert not np.allclose(active.as_numpy("scores"), old.as_numpy("scores"))


def test_multi_label_embedding_and_tokens_equal_native(client, server):
    texts = TEXTS[:2]
    multi = infer(client, "multi", [text_input("text", texts, True)])
    native = server.native("multi", texts)
    assert strings(multi.as_numpy("labels")) == [",".join(p["labels"]) for p in native]
    expected = [list(p["scores"].values()) for p in native]
    np.testing.assert_allclose(multi.as_numpy("scores"), expected, atol=1e-6)
    embed = infer(client, "embed", [text_input("text", texts, False)], ["embedding"], False)
    expected = [p["embedding"] for p in server.native("embed", texts)]
    np.testing.assert_allclose(embed.as_numpy("embedding"), expected, atol=1e-6)
    tokens = infer(client, "tokens", [text_input("text", texts, True)])
    rows = [json.loads(x) for x in tokens.as_numpy("tokens")]
    native = server.native("tokens", texts)
    assert [[t["text"] for t in row] for row in rows] == [t.split() for t in texts]
    for row, prediction in zip(rows, native, strict=True):
        assert [t["label"] for t in row] == [t["label"] for t in prediction["tokens"]]
        assert [t["score"] for t in row] == pytest.approx(
            [t["score"] for t in prediction["tokens"]], abs=1e-6
        )


def v2_error(reply: httpx.Response, status: int, *words: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


def test_errors_have_the_protocol_shape_and_status(server):
    http, one = server.http, {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}
    v2_error(
        http.post("/v2/models/nope/infer", json={"inputs": [one]}, headers=auth()), 400, "nope"
    )
    v2_error(http.get("/v2/models/cls/versions/9", headers=auth()), 400, "no version 9")
    v2_error(http.get("/v2/models/cls/versions/x", headers=auth()), 400, "'x'")
    v2_error(http.get("/v2/models/Bad Name", headers=auth()), 400)
    v2_error(http.post("/v2/models/cls/infer", json={"inputs": [one]}), 401, "Bearer")
    wrong = {"Authorization": "Bearer not-the-token"}
    v2_error(http.post("/v2/models/cls/infer", json={"inputs": [one]}, headers=wrong), 403)
    pair_only = {**one, "name": "text_pair"}
    cases = [
        ({"inputs": [pair_only]}, "'text'"),
        ({"inputs": [{**one, "shape": [2]}]}, "shape [2]"),
        ({"inputs": [{**one, "datatype": "FP32"}]}, "BYTES"),
        ({"inputs": [one], "outputs": [{"name": "value"}]}, "'value'"),
        (
            {"inputs": [one], "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
            "classification extension",
        ),
        ({"inputs": [one] * 2}, "twice"),
        ({"inputs": [{**one, "shape": [9], "data": ["a"] * 9}]}, "at most 8"),
        ({"inputs": [one], "extra": 1}, "'extra'"),
        ({"inputs": []}, "non-empty"),
    ]
    for body, word in cases:
        v2_error(http.post("/v2/models/cls/infer", json=body, headers=auth()), 400, word)
    v2_error(http.get("/v2/nowhere", headers=auth()), 404)


def last_forward(server: ProtocolServer) -> int:
    return server.http.get("/stats/batches", params={"limit": 1}).json()["last_id"]


def test_an_output_the_task_lacks_is_refused_before_the_forward(server):
    one = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}
    before = last_forward(server)
    body = {"inputs": [one], "outputs": [{"name": "value"}]}
    reply = server.http.post("/v2/models/cls/infer", json=body, headers=auth())
    assert "unknown output 'value'" in v2_error(reply, 400)
    assert last_forward(server) == before


def test_binary_bodies_are_checked(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 9},
                }
            ]
        }
    ).encode()
    element = len(b"hello").to_bytes(4, "little") + b"hello"
    url = "/v2/models/cls/infer"

    def post(body: bytes, length) -> httpx.Response:
        headers = {**auth(), "Inference-Header-Content-Length": str(length)}
        return server.http.post(url, content=body, headers=headers)

    assert post(header + element, len(header)).status_code == 200
    v2_error(post(header + element, len(header) + 999), 400, "Inference-Header-Content-Length")
    v2_error(post(header + element[:6], len(header)), 400, "binary_data_size 9")
    v2_error(post(header + element + b"xx", len(header)), 400, "follow")
    bad_length = header.replace(b"9", b"4") + (99).to_bytes(4, "little")
    v2_error(post(bad_length, len(header)), 400, "declares 99 bytes")
    v2_error(server.http.post(url, content=b"x" * 300_000, headers=auth()), 413)


def test_gzip_requests_are_read(client, server):
    inputs = [text_input("text", TEXTS, True)]
    packed = client.infer("reg", inputs, headers=auth(), request_compression_algorithm="gzip")
    expected = [p["value"] for p in server.native("reg", TEXTS)]
    np.testing.assert_allclose(packed.as_numpy("value"), expected, atol=1e-6)
    bomb = gzip.compress(b" " * (10 * 2**20))
    headers = {**auth(), "Content-Encoding": "gzip"}
    v2_error(server.http.post("/v2/models/reg/infer", content=bomb, headers=headers), 413)


def test_client_errors_surface_the_message(client):
    with pytest.raises(InferenceServerException, match="no task named 'nope'"):
        client.infer("nope", [text_input("text", ["a"], True)], headers=auth())


def test_v2_requests_are_counted(server):
    text = server.http.get("/metrics").text
    assert 'api="v2",status="200",task="cls"' in text
    assert 'api="v2",status="400",task="_unknown"' in text
