"""A lean closed-loop HTTP/1.1 load generator (asyncio streams, keep-alive, no client library).

Each of N clients sends a request, waits for the answer, sends the next, for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    """Latencies (s) of successful requests, inputs served, errors by status, wall time."""

    latencies: list[float] = field(default_factory=list)
    inputs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the load generator itself used

    def merge(self, other: LoadResult) -> None:
        """Add another run's requests (rounds of one scenario)."""
        self.latencies += other.latencies
        self.inputs += other.inputs
        self.seconds += other.seconds
        self.client_cpu += other.client_cpu
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n

    def summary(self) -> dict:
        """Throughput and latency percentiles."""
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "requests_per_s": len(self.latencies) / self.seconds,
            "inputs_per_s": self.inputs / self.seconds,
            "requests": len(self.latencies),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
            "client_cores": self.client_cpu / self.seconds,
        }


@dataclass(frozen=True)
class RawRequest:
    """A request already encoded: path, body bytes, inputs it carries, extra header lines."""

    path: str
    body: bytes
    inputs: int
    headers: str = ""  # e.g. "Inference-Header-Content-Length: 120\r\n"
    content_type: str = "application/json"


def freeze_client_heap() -> None:
    """Collect once and exempt every object the client process holds now from later
    collections: a bench process has torch and transformers loaded (~0.5M objects), and a full
    collection of them paused the client for ~180 ms, which counted in the latencies it
    measured (the first open-loop phase of `bench tenancy` saw it as a p99 of 100-235 ms)."""
    gc.collect()
    gc.freeze()


def as_raw(request) -> RawRequest:
    """make_request's answer as a RawRequest ((path, JSON payload) pairs are encoded here)."""
    if isinstance(request, RawRequest):
        return request
    path, payload = request
    return RawRequest(path, json.dumps(payload).encode(), len(payload["inputs"]))


async def _post(reader, writer, host: str, request: RawRequest) -> tuple[int, bytes]:
    body = request.body
    head = (
        f"POST {request.path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {request.content_type}\r\n{request.headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    payload = await reader.readexactly(length)
    return int(status_line.split()[1]), payload


async def _client(host, port, make_request, seconds, result: LoadResult, seed: int):
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            request = as_raw(make_request(rng))
            started = time.perf_counter()
            status, _ = await _post(reader, writer, host, request)
            if status == 200:
                result.latencies.append(time.perf_counter() - started)
                result.inputs += request.inputs
            else:
                result.errors[str(status)] = result.errors.get(str(status), 0) + 1
    except (ConnectionError, asyncio.IncompleteReadError) as err:
        result.errors[type(err).__name__] = result.errors.get(type(err).__name__, 0) + 1
    finally:
        writer.close()


async def run_load(url: str, make_request, clients: int, seconds: float) -> LoadResult:
    """`clients` closed-loop connections for `seconds`; make_request(rng) -> (path, json) or a
    RawRequest.
    Client i draws its requests from random.Random(i) (server_bench.first_requests relies on it)."""
    host, port = url.removeprefix("http://").split(":")
    result = LoadResult()
    freeze_client_heap()
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(
        *(_client(host, int(port), make_request, seconds, result, i) for i in range(clients))
    )
    result.seconds = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu
    return result
