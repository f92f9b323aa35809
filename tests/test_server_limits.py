"""Hostile and malformed input against a real server: limits, auth order, the error contract."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import torch

from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch

ADMIN = "admin-token-123"
READER = "predict-token-456"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
READ = {"Authorization": f"Bearer {READER}"}
MAX_CHARS = 64
LIMIT = 4096


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory, model):
    store = tmp_path_factory.mktemp("limits") / "store"
    flags = ("--no-demo-patches", "--admin-token", ADMIN, "--predict-token", READER)
    flags += ("--max-input-chars", str(MAX_CHARS), "--max-request-bytes", str(LIMIT))
    with ServerProcess(tiny_bert_dir, store, *flags) as srv:
        with httpx.Client(base_url=srv.url) as http:
            for task, inputs in (("single", "text"), ("pairs", "text_pair")):
                patch = random_patch(model, task, 2, "mean", seed=len(task))
                patch.inputs = inputs
                assert put(http, task, patch.to_bytes()).status_code == 201
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def put(http, task, data: bytes, headers=AUTH):
    return http.put(f"/tasks/{task}/patch", content=data, headers=headers)


def error_of(reply: httpx.Response, status: int, *words: str) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    error = reply.json()["error"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


def raw_request(server, head: str, body: bytes = b"", wait: float = 10) -> tuple[bytes, float]:
    """Send bytes on a socket and read the answer; also how long the answer took."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = sock.recv(65536)
        seconds = time.monotonic() - started
        while b"\r\n\r\n" in answer and not _complete(answer) and (more := sock.recv(65536)):
            answer += more  # the body may come in a later segment
        return answer, seconds


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def test_oversized_body_is_refused_before_it_is_sent(server):
    head = (
        "POST /tasks/single/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {READER}\r\nContent-Length: 600000000\r\n"
    )
    answer, _ = raw_request(server, head, b'{"inputs": ["')  # the rest never comes
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"--max-request-bytes" in answer


def test_chunked_body_is_counted_as_it_arrives(http):
    def chunks():
        yield b'{"inputs": ["'
        for _ in range(100):
            yield b"x" * 1000

    reply = http.post("/tasks/single/predict", content=chunks(), headers=READ)
    error_of(reply, 413, f"{LIMIT} bytes")


def test_auth_is_checked_before_the_body_is_read(server):
    head = (
        "POST /tasks/single/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 3000\r\n"
    )
    answer, seconds = raw_request(server, head, b"{")  # 2,999 bytes still owed
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert seconds < 5  # answered without waiting for the body


def test_long_input_names_the_input(http):
    reply = http.post("/tasks/single/predict", json={"inputs": ["ok", "y" * 65]}, headers=READ)
    error = error_of(reply, 422, "inputs[1]", f"at most {MAX_CHARS}", "--max-input-chars")
    assert error["code"] == "input_too_long"
    pair = {"inputs": [["ok", "z" * 65]]}
    error_of(http.post("/tasks/pairs/predict", json=pair, headers=READ), 422, "inputs[0][1]")


def test_lone_surrogate_is_a_clean_422(http):
    body = b'{"inputs": ["\\ud800 x"]}'
    reply = http.post("/tasks/single/predict", content=body, headers=READ)
    error_of(reply, 422, "JSON")
    assert http.post("/tasks/single/predict", json={"inputs": ["a"]}, headers=READ).is_success


def test_wrong_content_type_and_encoding_say_what_to_send(http):
    form = {**READ, "Content-Type": "application/x-www-form-urlencoded"}
    error_of(
        http.post("/tasks/single/predict", content=b"a=b", headers=form), 415, "application/json"
    )
    latin = '{"inputs": ["caf\xe9"]}'.encode("latin-1")
    json_type = {**READ, "Content-Type": "application/json"}
    reply = http.post("/tasks/single/predict", content=latin, headers=json_type)
    error_of(reply, 422, "UTF-8", '"inputs"')
    upload = {**AUTH, "Content-Type": "application/json"}
    error_of(put(http, "single", b"{}", upload), 415, "application/octet-stream")


def test_version_must_be_a_real_integer(http):
    for version in (True, 1.0, "1", 0):
        body = {"inputs": ["a"], "version": version}
        error_of(http.post("/tasks/single/predict", json=body, headers=READ), 422, "version")


def test_pairs_and_single_texts_must_match_the_task(http):
    reply = http.post("/tasks/single/predict", json={"inputs": ["a", ["b", "c"]]}, headers=READ)
    error = error_of(reply, 422, "inputs[1]", "single texts")
    assert error["code"] == "input_mismatch"
    reply = http.post("/tasks/pairs/predict", json={"inputs": ["a"]}, headers=READ)
    error_of(reply, 422, "inputs[0]", "pairs", '["text", "text_pair"]')


def test_task_name_with_trailing_newline_is_refused(http, model, server):
    data = random_patch(model, "nl", 2, "cls", seed=3).to_bytes()
    error_of(put(http, "nl%0A", data), 422, "not valid")
    error_of(http.post("/tasks/nl%0A/predict", json={"inputs": ["a"]}, headers=READ), 422)
    assert not any("\n" in p.name for p in (server.store).iterdir())


def test_max_length_must_be_ascii_digits(http, model):
    patch = random_patch(model, "digits", 2, "cls", seed=4)
    meta = patch.metadata() | {"max_length": "\u00b2"}
    from bitpatch.patches.patch_file import serialize

    tensors = {f"bias.{n}": t for n, t in patch.biases.items()}
    tensors |= {"head.weight": patch.head_weight, "head.bias": patch.head_bias}
    error_of(put(http, "digits", serialize(tensors, meta)), 422, "max_length")


def test_patch_with_overflowing_biases_is_refused(http, model):
    patch = random_patch(model, "huge", 2, "cls", seed=5)
    patch.biases = {name: torch.full_like(b, 1e30) for name, b in patch.biases.items()}
    error = error_of(put(http, "huge", patch.to_bytes()), 422, "not finite")
    assert error["code"] == "non_finite_outputs"
    error_of(http.get("/tasks/huge", headers=READ), 404)


def test_reads_need_a_token_when_one_is_set(http):
    for url in ("/tasks", "/tasks/single", "/tasks/single/versions/1/patch"):
        error_of(http.get(url), 401, "Bearer")
        error_of(http.get(url, headers={"Authorization": "Bearer wrong-token"}), 403)
        assert http.get(url, headers=READ).status_code == 200
        assert http.get(url, headers=AUTH).status_code == 200
    assert http.get("/healthz").status_code == 200  # probes stay open


def test_download_of_a_vanished_version_is_404(http, model, server):
    for seed in (6, 7):
        data = random_patch(model, "vanish", 2, "cls", seed).to_bytes()
        assert put(http, "vanish", data).status_code == 201
    (server.store / "vanish" / "v1.safetensors").unlink()  # as a concurrent DELETE would
    reply = http.get("/tasks/vanish/versions/1/patch", headers=READ)
    error_of(reply, 404, "no version 1")
    assert http.get("/tasks/vanish/versions/2/patch", headers=READ).status_code == 200


def test_delete_active_message_names_the_task(http, model):
    put(http, "named", random_patch(model, "named", 2, "cls", seed=8).to_bytes())
    reply = http.delete("/tasks/named/versions/1", headers=AUTH)
    error_of(reply, 409, "DELETE /tasks/named to remove")


def test_schema_and_errors_stay_json_on_unknown_routes(http):
    error_of(http.get("/nope"), 404)
    error_of(http.post("/healthz"), 405)
    doc = http.get("/openapi.json").json()
    body = doc["paths"]["/tasks/{task}/predict"]["post"]["requestBody"]
    assert "inputs" in json.dumps(body)


def test_serve_without_admin_token_warns(tiny_bert_dir, tmp_path):
    with ServerProcess(tiny_bert_dir, tmp_path / "store", "--no-demo-patches") as srv:
        assert "event=no_admin_token" in srv.logs()


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1e12", "nan"])
def test_a_bad_timeout_header_says_what_to_send(http, value):
    headers = {**READ, "X-Bitpatch-Timeout-Ms": value}
    reply = http.post("/tasks/single/predict", json={"inputs": ["a"]}, headers=headers)
    assert reply.status_code == 422, reply.text
    assert "X-Bitpatch-Timeout-Ms" in reply.json()["error"]["message"]


def test_a_request_within_its_timeout_is_answered(http):
    headers = {**READ, "X-Bitpatch-Timeout-Ms": "5000"}
    reply = http.post("/tasks/single/predict", json={"inputs": ["a"]}, headers=headers)
    assert reply.status_code == 200, reply.text
