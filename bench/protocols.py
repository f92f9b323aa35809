"""`python -m bench protocols`: one server, the same closed-loop load through each API.

16 tasks, 32 clients, GLUE sentences, 1 and 4 inputs per request, through the native API,
the v2 REST protocol with JSON tensor data and with binary tensor data, and v2 gRPC. Rounds are
interleaved with the order rotated, so the host's noise hits every API alike. Reported per API:
inputs/s, p50/p99 latency, the server's CPU ms per input (its /proc/<pid>/stat), and the ratio
of inputs/s to the native API's.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from bitpatch.server.protocols.v2.grpc_messages import SERVICE, method_types
from bitpatch.server.protocols.v2.tensors import pack_bytes

from .launcher import ServerProcess, free_port
from .loadgen import LoadResult, RawRequest, run_load
from .replicas import cpu_seconds
from .servers import PatchSource
from .workload import glue_sentences

APIS = ("native", "v2_json", "v2_binary", "grpc")
TASKS = 16
CLIENTS = 32
SENTENCES = glue_sentences(2000, seed=3)


def draw(rng: random.Random, per_request: int) -> tuple[str, list[str]]:
    """A random task and `per_request` consecutive sentences."""
    start = rng.randrange(len(SENTENCES) - per_request)
    return f"t{rng.randrange(TASKS)}", SENTENCES[start : start + per_request]


def native(per_request: int):
    """make_request for `POST /tasks/{task}/predict`."""

    def make(rng):
        task, texts = draw(rng, per_request)
        return RawRequest(
            f"/tasks/{task}/predict", json.dumps({"inputs": texts}).encode(), len(texts)
        )

    return make


def v2_json(per_request: int):
    """make_request for v2 REST infer with JSON tensor data."""

    def make(rng):
        task, texts = draw(rng, per_request)
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
        body = json.dumps({"inputs": [tensor]}).encode()
        return RawRequest(f"/v2/models/{task}/infer", body, len(texts))

    return make


def v2_binary(per_request: int):
    """make_request for v2 REST infer with binary tensor data in and out (tritonclient's
    default)."""

    def make(rng):
        task, texts = draw(rng, per_request)
        raw = pack_bytes([t.encode() for t in texts])
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)]}
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
        return RawRequest(
            f"/v2/models/{task}/infer",
            header.encode() + raw,
            len(texts),
            f"Inference-Header-Content-Length: {len(header)}\r\n",
            "application/octet-stream",
        )

    return make


async def grpc_load(address: str, per_request: int, clients: int, seconds: float) -> LoadResult:
    """Closed-loop ModelInfer calls, one channel per client (as HTTP uses one connection)."""
    request_type, response_type = method_types("ModelInfer")
    result = LoadResult()

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                task, texts = draw(rng, per_request)
                request = request_type(model_name=task)
                request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
                request.raw_input_contents.append(pack_bytes([t.encode() for t in texts]))
                started = time.perf_counter()
                try:
                    await call(request)
                except grpc.aio.AioRpcError as err:
                    name = err.code().name
                    result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.inputs += len(texts)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result.seconds = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu
    return result


def one_load(server: ServerProcess, grpc_address: str, api: str, k: int, seconds: float) -> dict:
    """One closed-loop run of an API; its summary with the server's CPU per input."""
    before = cpu_seconds(server.proc.pid)
    if api == "grpc":
        result = asyncio.run(grpc_load(grpc_address, k, CLIENTS, seconds))
    else:
        make = {"native": native, "v2_json": v2_json, "v2_binary": v2_binary}[api](k)
        result = asyncio.run(run_load(server.url, make, CLIENTS, seconds))
    summary = result.summary()
    used = cpu_seconds(server.proc.pid) - before
    summary["server_cpu_ms_per_input"] = 1000 * used / max(result.inputs, 1)
    return summary


def run_protocols(quick: bool) -> dict:
    """Every API at 1 and 4 inputs per request, rounds interleaved."""
    rounds, seconds = (1, 2.0) if quick else (3, 10.0)
    source = PatchSource()
    runs: dict[str, list[dict]] = {f"{api}@{k}": [] for k in (1, 4) for api in APIS}
    with tempfile.TemporaryDirectory(prefix="bitpatch-protocols-") as tmp:
        grpc_port = free_port()
        flags = ("--no-demo-patches", "--log-level", "warning", "--grpc-port", str(grpc_port))
        with ServerProcess("default", Path(tmp) / "store", *flags, dtype="auto") as server:
            source.upload(server.url, TASKS)
            address = f"127.0.0.1:{grpc_port}"
            for api in APIS:  # warm-up: every path's first calls
                one_load(server, address, api, 1, 1.0)
            for r in range(rounds):
                order = APIS[r % len(APIS) :] + APIS[: r % len(APIS)]
                for k in (1, 4):
                    for api in order:
                        runs[f"{api}@{k}"].append(one_load(server, address, api, k, seconds))
    return {
        "rounds": rounds,
        "seconds": seconds,
        "clients": CLIENTS,
        "tasks": TASKS,
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Mean of the rounds per API and inputs per request, with the ratio to native."""
    out = {}
    for key, rounds in runs.items():
        out[key] = {
            field: statistics.mean(r[field] for r in rounds)
            for field in (
                "inputs_per_s",
                "p50_ms",
                "p99_ms",
                "server_cpu_ms_per_input",
                "client_cores",
                "errors",
            )
        }
    for key, row in out.items():
        row["vs_native"] = row["inputs_per_s"] / out[f"native@{key.split('@')[1]}"]["inputs_per_s"]
    return out


def protocols_markdown(r: dict) -> str:
    """The suite's table."""
    lines = [
        "| API | inputs/request | inputs/s | vs native | p50 ms | p99 ms | server CPU ms/input "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in r["summary"].items():
        api, k = key.split("@")
        lines.append(
            f"| {api} | {k} | {row['inputs_per_s']:.1f} | {row['vs_native']:.2f}x | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['server_cpu_ms_per_input']:.2f} | "
            f"{row['errors']:.0f} |"
        )
    return "\n".join(lines)
