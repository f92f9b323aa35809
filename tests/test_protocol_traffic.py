"""Concurrent native, v2 REST and v2 gRPC traffic over 16 tasks: no errors, and rows of
different protocols share forwards (read from /stats/batches)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from protocols import MIXED_TASKS, TEXTS, auth, grpc_auth

GROUPS = {"native": MIXED_TASKS[:6], "v2": MIXED_TASKS[6:11], "grpc": MIXED_TASKS[11:]}
REQUESTS_PER_THREAD = 12
THREADS_PER_PROTOCOL = 4


def native_calls(server, seed: int) -> list:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        out = []
        for i in range(REQUESTS_PER_THREAD):
            task = GROUPS["native"][(seed + i) % len(GROUPS["native"])]
            reply = http.post(
                f"/tasks/{task}/predict", json={"inputs": [TEXTS[i % 3]]}, headers=auth()
            )
            assert reply.status_code == 200, reply.text
            out.append(reply.json()["predictions"][0]["label"])
        return out


def v2_calls(server, seed: int) -> list:
    out = []
    with triton_http.InferenceServerClient(server.address) as client:
        for i in range(REQUESTS_PER_THREAD):
            task = GROUPS["v2"][(seed + i) % len(GROUPS["v2"])]
            text = triton_http.InferInput("text", [1], "BYTES")
            text.set_data_from_numpy(np.array([TEXTS[i % 3].encode()], dtype=object))
            out.append(client.infer(task, [text], headers=auth()).as_numpy("label")[0])
    return out


def grpc_calls(server, seed: int) -> list:
    out = []
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        for i in range(REQUESTS_PER_THREAD):
            task = GROUPS["grpc"][(seed + i) % len(GROUPS["grpc"])]
            text = triton_grpc.InferInput("text", [1], "BYTES")
            text.set_data_from_numpy(np.array([TEXTS[i % 3].encode()], dtype=object))
            out.append(client.infer(task, [text], headers=grpc_auth()).as_numpy("label")[0])
    return out


def test_protocols_share_forwards_without_errors(protocol_server):
    server = protocol_server
    before = server.http.get("/stats/batches", headers=auth()).json()["last_id"]
    callers = [native_calls, v2_calls, grpc_calls]
    with ThreadPoolExecutor(len(callers) * THREADS_PER_PROTOCOL) as pool:
        futures = [
            pool.submit(call, server, seed)
            for call in callers
            for seed in range(THREADS_PER_PROTOCOL)
        ]
        answers = [f.result() for f in futures]  # any failed request raises here
    assert sum(len(a) for a in answers) == len(callers) * THREADS_PER_PROTOCOL * REQUESTS_PER_THREAD
    batches = server.http.get("/stats/batches", params={"after": before}).json()["batches"]
    group_of = {task: name for name, tasks in GROUPS.items() for task in tasks}
    spans = [{group_of[t] for t in b["task_rows"]} for b in batches]
    assert sum(b["rows"] for b in batches) == sum(len(a) for a in answers)
    shared = [s for s in spans if len(s) >= 2]
    assert shared, f"no forward mixed protocols: {spans}"
    assert any("grpc" in s and len(s) > 1 for s in spans), "no gRPC row shared a REST forward"
