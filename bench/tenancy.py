"""Tenants sharing one server: a noisy neighbour and overload, with open-loop clients (each
request is sent at its scheduled time whatever the answers; latency counts from that time).

Capacity is the server's rows per second (closed-loop clients sending 4-input requests over 16
tasks). Load is counted in rows, so the forward is what is overloaded, not the HTTP parser:
- Noisy neighbour: task A sends 8-input requests at 5x capacity, task B 1-input requests at
  10%; B's latency and errors beside A against B alone, side by side in one run on seven
  servers (all with --max-queue-per-task): the defaults (fair batching, and express forwards
  where the forward has layer breaks), fair batching without express forwards
  (--express-rows 0), the onnxruntime forward (auto on AMD CPUs) with and without them, fair
  batching with smaller forwards (--max-batch-size 16 and 8), and arrival-order batching.
- Overload: 16 tasks at 2x capacity (4-input requests) with a deadline (X-Bitpatch-Timeout-Ms)
  and without: how fast a shed request is answered, the admitted requests' p99 against the
  deadline plus one forward.
- Refusal storm: 16 closed-loop clients resend at once every refused 1-input request of one
  task (--max-queue-per-task 4): the admitted requests' rate and latency with Python's 5 ms
  thread switch interval and with the server's default (--gil-switch-ms).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .launcher import ServerProcess
from .loadgen import RawRequest, _post, freeze_client_heap, run_load
from .servers import PatchSource

TASKS = 16
PER_TASK_QUEUE = 64  # --max-queue-per-task of both servers
DEADLINE_MS = 250
CONNECTIONS = 256  # open-loop connection pool
NO_EXPRESS = ("--express-rows", "0")
POLICIES = {  # the noisy neighbour's servers: name -> flags
    "default": (),  # fair batching; express forwards where forwards have layer breaks
    "fair_no_express": ("--batching", "fair", *NO_EXPRESS),
    "onnxruntime": ("--forward", "onnxruntime"),  # auto on AMD CPUs: express in its chain
    "onnxruntime_no_express": ("--forward", "onnxruntime", *NO_EXPRESS),
    "fair_batch16": ("--batching", "fair", "--max-batch-size", "16", *NO_EXPRESS),
    "fair_batch8": ("--batching", "fair", "--max-batch-size", "8", *NO_EXPRESS),
    "arrival": ("--batching", "arrival"),
}


@dataclass
class OpenResult:
    """Latencies (s, from the scheduled send) of answered requests by status, and of the
    deadline refusals by where the server refused them."""

    by_status: dict[str, list[float]] = field(default_factory=dict)
    refused_at: dict[str, list[float]] = field(default_factory=dict)  # admission | queue
    sent: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_answer: float = 0.0

    def add(self, status: str, seconds: float, payload: bytes = b"") -> None:
        """One answer."""
        self.by_status.setdefault(status, []).append(seconds)
        self.last_answer = time.perf_counter()
        where = refused_where(status, payload)
        if where:
            self.refused_at.setdefault(where, []).append(seconds)

    def summary(self, seconds: float) -> dict:
        """Rates, errors and percentiles (ms) of the 200s and of the refusals; answered/s over
        the time until the last answer (a queue may answer long after the sends end)."""
        ok = np.array(self.by_status.get("200", [0.0])) * 1000
        refused = [x for s, xs in self.by_status.items() if s != "200" for x in xs]
        span = max(seconds, self.last_answer - self.started)
        out = {
            "sent_per_s": round(self.sent / seconds, 1),
            "answered_per_s": round(len(self.by_status.get("200", [])) / span, 1),
            "errors": {s: len(xs) for s, xs in self.by_status.items() if s != "200"},
            "p50_ms": round(float(np.percentile(ok, 50)), 2),
            "p99_ms": round(float(np.percentile(ok, 99)), 2),
            "max_ms": round(float(ok.max()), 2),
        }
        if refused:
            out["refused_p99_ms"] = _p99_ms(refused)
        for where, xs in sorted(self.refused_at.items()):
            out[f"refused_at_{where}"] = {"count": len(xs), "p50_ms": _p50_ms(xs),
                                          "p99_ms": _p99_ms(xs)}  # fmt: skip
        return out


def refused_where(status: str, payload: bytes) -> str | None:
    """Where a 503 deadline refusal came from: admission (before any work) or the queue (a
    row still waiting at its deadline); None for any other answer."""
    if status != "503":
        return None
    if b"would start in" in payload:
        return "admission"
    if b"did not start before" in payload:
        return "queue"
    return None


def _p50_ms(seconds: list[float]) -> float:
    return round(float(np.percentile(np.array(seconds) * 1000, 50)), 2)


def _p99_ms(seconds: list[float]) -> float:
    return round(float(np.percentile(np.array(seconds) * 1000, 99)), 2)


class Pool:
    """Keep-alive connections to one server, opened as needed up to CONNECTIONS."""

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port, self.idle, self.opened = int(port), [], 0
        self.free = asyncio.Semaphore(CONNECTIONS)

    async def send(self, request: RawRequest) -> tuple[int, bytes]:
        """POST on an idle connection (or a new one); the status and body."""
        async with self.free:
            conn = self.idle.pop() if self.idle else await self._open()
            try:
                status, payload = await _post(*conn, self.host, request)
            except (ConnectionError, asyncio.IncompleteReadError):
                conn[1].close()
                return 0, b""
            self.idle.append(conn)
            return status, payload

    async def _open(self):
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def predict(task: str, rows: int = 1, timeout_ms: int | None = None) -> RawRequest:
    """One predict request of `rows` inputs."""
    body = json.dumps({"inputs": ["a short and friendly review of the film"] * rows}).encode()
    headers = f"X-Bitpatch-Timeout-Ms: {timeout_ms}\r\n" if timeout_ms else ""
    return RawRequest(f"/tasks/{task}/predict", body, rows, headers)


async def open_loop(
    pool: Pool, streams: list[tuple[float, callable]], seconds: float, seed: int = 0
) -> list:
    """Each stream (rate per s, make_request(rng)) sends at Poisson times for `seconds` (stream
    i drawn from seed + i); one OpenResult per stream."""
    results = [OpenResult() for _ in streams]  # their clocks start now
    pending: list[asyncio.Task] = []

    async def one(result: OpenResult, request: RawRequest, at: float) -> None:
        status, payload = await pool.send(request)
        result.add(str(status), time.perf_counter() - at, payload)

    async def stream(i: int, rate: float, make) -> None:
        rng, at = random.Random(seed + i), time.perf_counter()
        end = at + seconds
        while (at := at + rng.expovariate(rate)) < end:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            results[i].sent += 1
            pending.append(asyncio.create_task(one(results[i], make(rng), at)))

    await asyncio.gather(*(stream(i, r, m) for i, (r, m) in enumerate(streams)))
    await asyncio.gather(*pending)
    return results


def run_streams(url: str, streams, seconds: float) -> list[dict]:
    """Open-loop streams against a server, each in a client process of its own (tenants'
    clients are separate machines: a flood's answers must not delay another tenant's sends);
    each stream's summary."""
    freeze_client_heap()
    if len(streams) == 1:
        return [_one_stream(url, streams[0], seconds, 0)]
    fork = multiprocessing.get_context("fork")  # the streams' request makers are closures
    results = fork.Queue()
    clients = [
        fork.Process(target=lambda i=i, s=s: results.put((i, _one_stream(url, s, seconds, i))))
        for i, s in enumerate(streams)
    ]
    for client in clients:
        client.start()
    summaries = dict(results.get() for _ in clients)
    for client in clients:
        client.join()
    return [summaries[i] for i in range(len(streams))]


def _one_stream(url: str, stream, seconds: float, seed: int) -> dict:
    """One open-loop stream's summary, from this process."""

    async def main():
        pool = Pool(url)
        try:
            return await open_loop(pool, [stream], seconds, seed)
        finally:
            pool.close()

    return asyncio.run(main())[0].summary(seconds)


def capacity(url: str, seconds: float) -> float:
    """Rows/s of 32 closed-loop clients sending 4-input requests over the 16 tasks."""
    result = asyncio.run(
        run_load(url, lambda rng: predict(f"t{rng.randrange(TASKS)}", 4), 32, seconds)
    )
    return result.summary()["inputs_per_s"]


def noisy_neighbour(url: str, rate: float, seconds: float) -> dict:
    """B alone at 10% of capacity (1-input requests), then beside A at 5x (8-input ones)."""
    quiet = (0.1 * rate, lambda rng: predict("t1"))
    noisy = (5.0 * rate / 8, lambda rng: predict("t0", 8))
    run_streams(url, [quiet], seconds / 2)  # warm-up, not counted
    alone = run_streams(url, [quiet], seconds)[0]
    beside, flood = run_streams(url, [quiet, noisy], seconds)
    return {
        "b_alone": alone,
        "b_beside_a": beside,
        "a": flood,
        "b_p99_ratio": round(beside["p99_ms"] / alone["p99_ms"], 2),
    }


def overload(store: Path, flags: tuple, rate: float, seconds: float) -> dict:
    """16 tasks at 2x capacity, with and without a deadline, each on a fresh server: the
    clients' latencies, and the server's own (from its arrival, not from the client's send)."""
    out = {}
    for name, timeout in (("deadline", DEADLINE_MS), ("no_deadline", None)):
        make = lambda rng, t=timeout: predict(f"t{rng.randrange(TASKS)}", 4, t)  # noqa: E731
        with ServerProcess("default", store, *flags) as server:
            run_streams(server.url, [(0.2 * rate / 4, make)], seconds / 2)  # warm-up
            out[name] = run_streams(server.url, [(2.0 * rate / 4, make)], seconds)[0]
            out[name]["server_p99_ms_worst_task"] = server_p99(server.url)
    return out | {"deadline_ms": DEADLINE_MS}


def server_p99(url: str) -> float | None:
    """The highest per-task p99 the server measured (GET /stats/tasks, histogram buckets)."""
    import httpx

    page = httpx.get(f"{url}/stats/tasks", params={"sort": "p99_ms", "limit": 1}).json()
    return page["tasks"][0]["p99_ms"] if page["tasks"] else None


STORM_SWITCH_MS = (5.0, 0.2)  # Python's default, the server's


def refusal_storm(store: Path, flags: tuple, seconds: float) -> dict:
    """Admitted and refused requests/s under a storm of instant retries, per switch interval."""
    out = {}
    for switch_ms in STORM_SWITCH_MS:
        storm_flags = (*flags, "--max-queue-per-task", "4", "--gil-switch-ms", str(switch_ms))
        with ServerProcess("default", store, *storm_flags) as server:
            make = lambda rng: predict("t0")  # noqa: E731
            summary = asyncio.run(run_load(server.url, make, 16, seconds)).summary()
        out[str(switch_ms)] = {
            "admitted_per_s": round(summary["requests_per_s"], 1),
            "admitted_p50_ms": round(summary["p50_ms"], 1),
            "admitted_p99_ms": round(summary["p99_ms"], 1),
            "refused_per_s": round(summary["errors"] / seconds, 1),
        }
    return out


def run_tenancy(quick: bool) -> dict:
    """Capacity, then the noisy neighbour on each of POLICIES' servers, then overload on the
    default one."""
    seconds = 3.0 if quick else 10.0
    source = PatchSource()
    results: dict = {"seconds_per_phase": seconds}
    with tempfile.TemporaryDirectory(prefix="bitpatch-tenancy-") as tmp:
        store = Path(tmp) / "store"
        flags = ("--no-demo-patches", "--max-queue-per-task", str(PER_TASK_QUEUE))
        for policy, policy_flags in POLICIES.items():
            with ServerProcess("default", store, *flags, *policy_flags) as server:
                if policy == next(iter(POLICIES)):
                    source.upload(server.url, TASKS)
                rate = capacity(server.url, seconds)
                results[policy] = {"capacity_rows_per_s": round(rate, 1)}
                results[policy]["noisy"] = noisy_neighbour(server.url, rate, seconds)
        default_rate = results["default"]["capacity_rows_per_s"]
        results["overload"] = overload(store, flags, default_rate, seconds)
        results["storm"] = refusal_storm(store, ("--no-demo-patches",), seconds)
    return results


def tenancy_markdown(results: dict) -> str:
    """The tables of docs/BENCHMARKS.md."""
    lines = [
        "| server | capacity rows/s | B alone p50/p99 ms | B beside A p50/p99 ms | B p99 "
        "ratio | B errors | A answered/s (refused) |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy in (p for p in POLICIES if p in results):
        r = results[policy]
        n = r["noisy"]
        alone, beside, flood = n["b_alone"], n["b_beside_a"], n["a"]
        lines.append(
            f"| {policy} | {r['capacity_rows_per_s']} | {alone['p50_ms']} / {alone['p99_ms']} | "
            f"{beside['p50_ms']} / {beside['p99_ms']} | {n['b_p99_ratio']}x | "
            f"{sum(beside['errors'].values())} | {flood['answered_per_s']} "
            f"({sum(flood['errors'].values())}) |"
        )
    o = results["overload"]
    lines += [
        "",
        "| 16 tasks at 2x capacity (4-input requests) | answered/s | admitted p50/p99 ms "
        "(client) | admitted p99 ms (server, worst task) | refused | refused at admission: "
        "p50/p99 ms | dropped from the queue at the deadline: count, p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("deadline", "no_deadline"):
        r = o[name]
        label = f"X-Bitpatch-Timeout-Ms: {o['deadline_ms']}" if name == "deadline" else "none"
        admission, queue = r.get("refused_at_admission"), r.get("refused_at_queue")
        shed = f"{admission['p50_ms']} / {admission['p99_ms']}" if admission else "-"
        dropped = f"{queue['count']}, {queue['p99_ms']}" if queue else "0"
        lines.append(
            f"| {label} | {r['answered_per_s']} | {r['p50_ms']} / {r['p99_ms']} | "
            f"{r['server_p99_ms_worst_task']} | {r['errors']} | {shed} | {dropped} |"
        )
    if "storm" in results:
        lines += [
            "",
            "| refusal storm, --gil-switch-ms | admitted/s | admitted p50 / p99 ms | refused/s |",
            "|---|---|---|---|",
        ]
        for switch_ms, r in results["storm"].items():
            lines.append(
                f"| {switch_ms} | {r['admitted_per_s']} | {r['admitted_p50_ms']} / "
                f"{r['admitted_p99_ms']} | {r['refused_per_s']} |"
            )
    return "\n".join(lines)
