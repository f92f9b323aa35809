"""Upload throughput: distinct patches PUT by concurrent clients into one server (folder
store), as uploads/s; where one upload's server time goes (a profile of the registry's upload
in this process, on the same store and backbone); and one client's predict latency with and
without steady uploads (rounds interleaved)."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.core.registry import Registry
from bitpatch.server.store import open_store

from .loadgen import LoadResult, run_load
from .report import UPLOADS_PER_S
from .server_bench import BenchConfig, bench_server, request_maker, upload_steadily
from .servers import PatchSource

CLIENTS = 8


def upload_all(url: str, bodies: list[tuple[str, bytes]], clients: int) -> float:
    """PUT every (task, bytes) with `clients` threads; uploads per second."""

    def put(item: tuple[str, bytes]) -> int:
        with httpx.Client(base_url=url, timeout=60) as http:
            return http.put(f"/tasks/{item[0]}/patch", content=item[1]).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(put, bodies))
    seconds = time.perf_counter() - started
    if any(status != 201 for status in statuses):
        raise RuntimeError(f"uploads failed: {sorted(set(statuses))}")
    return len(bodies) / seconds


def where_time_goes(source: PatchSource, bodies: list[tuple[str, bytes]], root: Path) -> list:
    """The functions taking the most cumulative time across in-process registry uploads."""
    registry = Registry(open_store(root), MultiTaskEngine(source.backbone, "packed"))
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for task, data in bodies:
        registry.upload(task, data)
    profile.disable()
    per_upload_ms = (time.perf_counter() - started) * 1000 / len(bodies)
    stats = pstats.Stats(profile).sort_stats("cumulative")
    rows = []
    for (file, _, name), (_, calls, _, cumulative, _) in stats.stats.items():
        ours = any(f"/{room}/" in file for room in ("patches", "server", "bitpatch"))
        if ours or "safetensors" in file or "fsync" in name or "sha256" in name:
            rows.append((name, Path(file).name, calls, cumulative * 1000 / len(bodies)))
    rows.sort(key=lambda r: -r[3])
    return [
        {"per_upload_ms": per_upload_ms},
        *[
            dict(zip(("function", "file", "calls", "ms_per_upload"), r, strict=True))
            for r in rows[:14]
        ],
    ]


def run_uploads(quick: bool) -> dict:
    """Uploads/s of 8 clients into a fresh server, the in-process profile, and one client's
    predict latency beside steady uploads."""
    source = PatchSource()
    count = 48 if quick else 400
    bodies = [(f"t{i}", source.patch_bytes(f"t{i}", i)) for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="bitpatch-uploads-") as tmp:
        with bench_server(Path(tmp) / "store", BenchConfig(quick=quick, dtype="float32")) as srv:
            rate = upload_all(srv.url, bodies, CLIENTS)
            beside = {n: clients_beside_uploads(srv.url, source, quick, n) for n in (1, 64)}
        profile = where_time_goes(source, bodies, Path(tmp) / "profiled")
    return {
        "clients": CLIENTS,
        "uploads": count,
        "uploads_per_s": rate,
        "profile": profile,
        "one_client": beside[1],
        "64_clients": beside[64],
    }


def clients_beside_uploads(url: str, source: PatchSource, quick: bool, clients: int) -> dict:
    """Closed-loop clients on 16 tasks, with and without UPLOADS_PER_S uploads of new
    versions, rounds interleaved: their latency percentiles in each case."""
    rounds, seconds = (1, 1.0) if quick else (4, 8.0)
    make = request_maker(16, max_inputs=4)
    results = {"without_uploads": LoadResult(), "with_uploads": LoadResult()}
    uploads: list[int] = []
    for _ in range(rounds):
        results["without_uploads"].merge(asyncio.run(run_load(url, make, clients, seconds)))
        stop = threading.Event()
        thread = threading.Thread(target=upload_steadily, args=(url, source, stop, uploads))
        thread.start()
        results["with_uploads"].merge(asyncio.run(run_load(url, make, clients, seconds)))
        stop.set()
        thread.join()
    out = {name: result.summary() for name, result in results.items()}
    out["uploads"], out["upload_failures"] = len(uploads), sum(s != 201 for s in uploads)
    return out


def uploads_markdown(results: dict) -> str:
    """The result as a small table."""
    lines = [
        f"{results['uploads']} distinct uploads, {results['clients']} clients: "
        f"{results['uploads_per_s']:.1f} uploads/s",
        "",
        f"in-process registry upload: {results['profile'][0]['per_upload_ms']:.2f} ms each",
        "",
        "| function | file | calls | ms per upload (cumulative) |",
        "|---|---|---|---|",
    ]
    for row in results["profile"][1:]:
        lines.append(
            f"| {row['function']} | {row['file']} | {row['calls']} | {row['ms_per_upload']:.3f} |"
        )
    for name, label in (("one_client", "one client"), ("64_clients", "64 clients")):
        one = results[name]
        off, on = one["without_uploads"], one["with_uploads"]
        lines += [
            "",
            f"{label}, 16 tasks, with {one['uploads']} uploads ({one['upload_failures']} failed)"
            f" at {UPLOADS_PER_S}/s vs none: p50 {on['p50_ms']:.1f} vs {off['p50_ms']:.1f} ms, "
            f"p99 {on['p99_ms']:.1f} vs {off['p99_ms']:.1f} ms "
            f"({on['p99_ms'] / off['p99_ms']:.2f}x), max {on['max_ms']:.1f} vs "
            f"{off['max_ms']:.1f} ms ({on['max_ms'] / off['max_ms']:.2f}x)",
        ]
    return "\n".join(lines)
