"""A canary splits every protocol's requests alike: a key answered by the canary on the
native route is answered by it on fan-out, v2 REST, v2 gRPC (unmodified tritonclient) and
OpenAI embeddings too; a shadow runs beside every protocol's rows."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from bitpatch.testing import ServerProcess, free_port

from tiny import kind_patch, make_model

KEYS = [f"customer-{i}" for i in range(40)]


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    grpc_port = free_port()
    store = tmp_path_factory.mktemp("rollout-protocols") / "store"
    flags = ("--no-demo-patches", "--grpc-port", str(grpc_port))
    with ServerProcess(tiny_bert_dir, store, *flags) as process:
        model = make_model("bert")[0]
        with httpx.Client(base_url=process.url, timeout=30) as http:
            for task, kind in (("cls", "classification"), ("embed", "embedding")):
                for seed, activate in ((1, "true"), (2, "false")):
                    data = kind_patch(model, kind, task, seed=seed).to_bytes()
                    params = {"activate": activate}
                    reply = http.put(f"/tasks/{task}/patch", content=data, params=params)
                    assert reply.status_code == 201, reply.text
                for version in (1, 2):  # both resident
                    http.post(f"/tasks/{task}/predict", json={"inputs": ["x"], "version": version})
                canary = {"canary": {"version": 2, "percent": 50}}
                assert http.put(f"/tasks/{task}/rollout", json=canary).is_success
            yield process, http, f"127.0.0.1:{grpc_port}"


def native_version(http, task: str, key: str) -> int:
    reply = http.post(
        f"/tasks/{task}/predict", json={"inputs": ["a b"]}, headers={"X-Bitpatch-Key": key}
    )
    return reply.json()["version"]


def test_every_protocol_routes_a_key_to_the_same_version(server):
    _, http, grpc_address = server
    expected = {key: native_version(http, "cls", key) for key in KEYS}
    assert set(expected.values()) == {1, 2}
    triton = grpcclient.InferenceServerClient(grpc_address)
    for key, version in expected.items():
        headers = {"X-Bitpatch-Key": key}
        fan = http.post("/predict", json={"tasks": ["cls"], "inputs": ["a b"]}, headers=headers)
        assert fan.json()["results"]["cls"]["version"] == version
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]}]}
        rest = http.post("/v2/models/cls/infer", json=body, headers=headers)
        assert rest.json()["model_version"] == str(version)
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"a b"], dtype=object))
        reply = triton.infer("cls", [tensor], headers={"x-bitpatch-key": key})
        assert reply.get_response().model_version == str(version)


def test_openai_embeddings_follow_the_canary(server):
    _, http, _ = server
    pinned = {
        v: http.post("/tasks/embed/predict", json={"inputs": ["a b"], "version": v}).json()
        for v in (1, 2)
    }
    for key in KEYS[:20]:
        version = native_version(http, "embed", key)
        body = {"model": "embed", "input": "a b"}
        reply = http.post("/v1/embeddings", json=body, headers={"X-Bitpatch-Key": key})
        vector = reply.json()["data"][0]["embedding"]
        want = pinned[version]["predictions"][0]["embedding"]
        assert vector == pytest.approx(want, abs=1e-5)


def test_a_shadow_runs_beside_v2_and_grpc_rows(server):
    _, http, grpc_address = server
    shadow = {"shadow": {"version": 2, "percent": 100}}
    assert http.put("/tasks/cls/rollout", json=shadow).is_success
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b c"]}]}
    assert http.post("/v2/models/cls/infer", json=body).json()["model_version"] == "1"
    tensor = grpcclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a b"], dtype=object))
    grpcclient.InferenceServerClient(grpc_address).infer("cls", [tensor])
    for _ in range(100):
        figures = http.get("/tasks/cls/rollout").json()["figures"]["2"]
        if figures["shadow_rows"] == 3:
            break
        time.sleep(0.05)
    assert figures["shadow_rows"] == 3 and figures["agreement"] is not None
