"""Scoped tokens against a real server on every protocol: a token sees, predicts, reads and
writes only its tasks (others answer as absent, writes 403), quotas, a tokens file reloaded
live and a bad one kept out; the file's parsing and the quota's bucket on their own."""

from __future__ import annotations

import json
import logging
import time

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as triton_grpc

from bitpatch.server.auth import Access
from bitpatch.server.errors import QuotaExceeded
from bitpatch.server.tenants import Quota, TokensFile, digest_of, parse_tokens
from bitpatch.testing import ServerProcess, free_port

from tiny import kind_patch, make_model, random_patch

ADMIN = "global-admin-token"
TOKENS = {
    "c42-predict": ("predict", ["c42-*"]),
    "c42-read": ("read", ["c42-*"]),
    "c42-admin": ("admin", ["c42-*", "shared"]),
    "c7-read": ("read", ["c7-*"]),
}
OWN = ["c42-a", "c42-b", "c42-embed"]
OTHERS = ["c7-a", "c7-embed"]


def entry(name: str, role: str, tasks: list[str], **extra) -> dict:
    return {"name": name, "sha256": digest_of(f"token-of-{name}"), "role": role, "tasks": tasks,
            **extra}  # fmt: skip


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer token-of-{name}"}


def write_tokens(path, extra: list[dict] = ()) -> None:
    entries = [entry(name, role, tasks) for name, (role, tasks) in TOKENS.items()]
    path.write_text(json.dumps([*entries, *extra]))


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tenants") / "tokens.json"
    write_tokens(path, [entry("metered", "read", ["c42-*"], rows_per_second=0.5, burst=2)])
    return path


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory, tokens_path):
    model = make_model("bert")[0]
    store = tmp_path_factory.mktemp("tenants-store") / "store"
    grpc_port = free_port()
    flags = ("--no-demo-patches", "--admin-token", ADMIN, "--tokens-file", str(tokens_path),
             "--grpc-port", str(grpc_port))  # fmt: skip
    with ServerProcess(tiny_bert_dir, store, *flags) as srv:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN}"}) as h:
            for i, task in enumerate([*OWN, *OTHERS]):
                kind = "embedding" if task.endswith("embed") else "classification"
                data = kind_patch(model, kind, task, seed=i).to_bytes()
                assert h.put(f"/tasks/{task}/patch", content=data).status_code == 201
        srv.grpc_address = f"127.0.0.1:{grpc_port}"
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def predict(http, task: str, who: str) -> httpx.Response:
    return http.post(f"/tasks/{task}/predict", json={"inputs": ["a b"]}, headers=bearer(who))


def absent_like(reply: httpx.Response, other: httpx.Response, task: str, absent: str) -> bool:
    """Whether a reply for a task outside the scope equals the one for an absent task."""
    return reply.status_code == other.status_code and reply.text.replace(
        task, "TASK"
    ) == other.text.replace(absent, "TASK")


def test_a_token_predicts_only_its_tasks_and_others_look_absent(http):
    assert predict(http, "c42-a", "c42-predict").status_code == 200
    outside = predict(http, "c7-a", "c42-predict")
    assert absent_like(outside, predict(http, "c7-zz", "c42-predict"), "c7-a", "c7-zz")
    assert outside.status_code == 404
    assert predict(http, "c7-a", "c7-read").status_code == 200
    fanout = http.post("/predict", json={"tasks": ["c42-a", "c7-a"], "inputs": ["x"]},
                       headers=bearer("c42-predict"))  # fmt: skip
    assert fanout.status_code == 404 and "c7-a" in fanout.text
    unknown = http.post("/tasks/c42-a/predict", json={"inputs": ["x"]},
                        headers={"Authorization": "Bearer not-a-known-token"})  # fmt: skip
    assert unknown.status_code == 403


def test_roles_open_what_they_say(http):
    assert http.get("/tasks", headers=bearer("c42-predict")).status_code == 403
    listed = http.get("/tasks", headers=bearer("c42-read")).json()
    assert [t["task"] for t in listed["tasks"]] == OWN and listed["total"] == 3
    own = http.get("/tasks/c42-a/versions/1/patch", headers=bearer("c42-read"))
    other = http.get("/tasks/c7-a/versions/1/patch", headers=bearer("c42-read"))
    assert own.status_code == 200 and other.status_code == 404
    assert http.get("/tasks/c7-a", headers=bearer("c42-read")).status_code == 404
    who = http.get("/whoami", headers=bearer("c42-read")).json()
    assert who["name"] == "c42-read" and who["tasks"] == ["c42-*"]
    assert who["may"]["read"] and who["may"]["predict"] and not who["may"]["admin"]
    stats = http.get("/stats/tasks", headers=bearer("c42-read")).json()
    assert {e["task"] for e in stats["tasks"]} <= set(OWN)


def test_a_scoped_admin_writes_only_its_tasks(http):
    model = make_model("bert")[0]
    mine = random_patch(model, "c42-new", 2, "cls", seed=9).to_bytes()
    theirs = random_patch(model, "c7-new", 2, "cls", seed=9).to_bytes()
    token = bearer("c42-admin")
    assert http.put("/tasks/c42-new/patch", content=mine, headers=token).status_code == 201
    refused = http.put("/tasks/c7-new/patch", content=theirs, headers=token)
    assert refused.status_code == 403 and "c42-admin" in refused.text
    assert http.post("/tasks/c7-a/versions/1/activate", headers=token).status_code == 403
    assert http.delete("/tasks/c7-a", headers=token).status_code == 403
    rollout = {"shadow": {"version": 1, "percent": 10}}
    assert http.put("/tasks/c7-a/rollout", json=rollout, headers=token).status_code == 403
    assert http.get("/tasks/c7-a", headers=bearer("c7-read")).status_code == 200  # untouched
    assert http.put("/tasks/c42-new/patch", content=mine,
                    headers=bearer("c42-read")).status_code == 403  # fmt: skip
    assert http.delete("/tasks/c42-new", headers=token).status_code == 200


def test_the_standard_protocols_keep_the_scope(server, http):
    index = http.post("/v2/repository/index", headers=bearer("c42-read")).json()
    assert [m["name"] for m in index] == OWN
    v2_other = http.post("/v2/models/c7-a/infer", headers=bearer("c42-read"),
                         json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                           "data": ["x"]}]})  # fmt: skip
    v2_absent = http.post("/v2/models/c7-zz/infer", headers=bearer("c42-read"),
                          json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                            "data": ["x"]}]})  # fmt: skip
    assert absent_like(v2_other, v2_absent, "c7-a", "c7-zz")
    models = http.get("/v1/models", headers=bearer("c42-read")).json()
    assert [m["id"] for m in models["data"]] == OWN
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="token-of-c42-read",
                       max_retries=0) as client:  # fmt: skip
        assert client.embeddings.create(model="c42-embed", input="x").data
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="c7-embed", input="x")
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    meta = {"authorization": "Bearer token-of-c42-read"}
    names = [m.name for m in client.get_model_repository_index(headers=meta).models]
    assert names == OWN
    assert client.is_model_ready("c42-a", headers=meta)
    with pytest.raises(triton_grpc.InferenceServerException) as hidden:
        client.get_model_metadata("c7-a", headers=meta)
    assert "no task named 'c7-a'" in str(hidden.value)
    text = triton_grpc.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(triton_grpc.InferenceServerException) as refused:
        client.infer("c7-a", [text], headers=meta)
    assert refused.value.status() == "StatusCode.NOT_FOUND"
    assert client.infer("c42-a", [text], headers=meta).as_numpy("label") is not None


def test_a_quota_refuses_rows_beyond_it_with_retry_after(http):
    answers = [predict(http, "c42-a", "metered") for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert answers[2].status_code == 429 and int(answers[2].headers["retry-after"]) >= 1
    assert "metered" in answers[2].json()["error"]["message"]
    metrics = http.get("/metrics").text
    assert 'bitpatch_token_requests_total{status="429",token="metered"}' in metrics


def test_the_file_is_reloaded_live_and_a_bad_one_kept_out(http, tokens_path):
    assert predict(http, "c42-a", "late").status_code == 403
    write_tokens(tokens_path, [entry("late", "predict", ["c42-*"])])
    deadline = time.monotonic() + 10
    while predict(http, "c42-a", "late").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert predict(http, "c42-a", "late").status_code == 200
    tokens_path.write_text("[{not: valid")
    time.sleep(1.5)
    assert predict(http, "c42-a", "late").status_code == 200  # the previous tokens stay


def test_parsing_says_what_is_wrong_where(tmp_path, caplog):
    good = [entry("a", "read", ["t-*"], rows_per_second=5)]
    assert parse_tokens(json.dumps(good), "f")[0].rows_per_second == 5
    weighted = parse_tokens(json.dumps([entry("g", "read", ["t-*"], weight=3)]), "f")[0]
    assert weighted.caller().flow("t-1") == weighted.caller().flow("t-2")  # one tenant flow
    assert weighted.caller().flow("t-1").weight == 3.0
    yaml_text = "- name: a\n  sha256: '" + "0" * 64 + "'\n  role: admin\n  tasks: ['*']\n"
    assert parse_tokens(yaml_text, "f")[0].role == "admin"
    for bad, words in (
        ({"name": "a"}, "expected {name, sha256, role, tasks}"),
        (entry("a", "owner", ["x"]), "role must be one of"),
        ({**entry("a", "read", ["x"]), "sha256": "abc"}, "64 hex digits"),
        (entry("a", "read", "x"), "tasks must be a list"),
        (entry("a", "read", ["x"], burst=-1), "burst must be a positive number"),
        (entry("a", "read", ["x"], weight=0), "weight must be a positive number, got 0"),
        (entry("a", "read", ["x"], weight="heavy"), "weight must be a positive number"),
        (entry("a", "read", ["x"], weight=True), "weight must be a positive number"),
        ({**entry("a", "read", ["x"]), "colour": 1}, "unknown keys"),
    ):
        with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("}", r"\}")):
            parse_tokens(json.dumps([bad]), "f")
    with pytest.raises(ValueError, match="names must be unique"):
        parse_tokens(json.dumps([entry("a", "read", ["x"]), entry("a", "admin", ["y"])]), "f")
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(good))
    tokens = TokensFile(path)
    caller = tokens.find("token-of-a")
    assert caller.sees("t-1") and not caller.sees("u-1") and caller.may(Access.READ)
    assert not caller.may(Access.ADMIN) and tokens.find("nope") is None
    path.write_text("{")
    with caplog.at_level(logging.ERROR):
        assert not tokens.reload()
    assert "tokens_file_refused" in caplog.text and tokens.find("token-of-a") is caller
    with pytest.raises(ValueError, match="--tokens-file"):
        TokensFile(path)


def test_the_bucket_refills_at_its_rate():
    quota = Quota(rows_per_second=10, burst=5)
    quota.take(5, "t")
    with pytest.raises(QuotaExceeded) as refused:
        quota.take(3, "t")
    assert refused.value.headers["Retry-After"] == "1"
    quota.stamp -= 0.5  # half a second later: 5 rows back
    quota.take(5, "t")
