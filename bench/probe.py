"""Quick probes used while tuning (each figure in BENCHMARKS.md's tuning log names one).

`python -m bench probe`: one server, 16 tasks: 1-client p50 and 64-client throughput with the
batch statistics, per-thread CPU, the garbage collector's pauses and the resident memory;
`--threads N`/`--env K=V` vary the server.
`python -m bench omp`: one single-row forward timed on the main thread, then on a worker
thread, then on main again.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine

from .micro import random_patches
from .server_bench import load
from .servers import BenchServer, PatchSource, metric_samples
from .workload import mixed_inputs


def probe_server(extra: list[str], env: dict[str, str], seconds: float = 10) -> dict:
    """1 client x 1 input (p50), then 64 clients x mixed 16 tasks (throughput, batches, and
    where the CPU went: the server's busiest threads and the machine's idle cores)."""
    source = PatchSource()
    with (
        tempfile.TemporaryDirectory() as tmp,
        BenchServer(Path(tmp), "bitpatch", "auto", *extra, env=env) as server,
    ):
        source.upload(server.url, 16)
        load(server.url, 16, 64, 3)
        one = load(server.url, 1, 1, seconds / 2, max_inputs=1)
        threads, idle, started = _thread_cpu(server.proc.pid), _idle_cpu(), time.perf_counter()
        gc_before = gc_pauses(server.url)
        many = load(server.url, 16, 64, seconds)
        wall = time.perf_counter() - started
        used = _thread_cpu(server.proc.pid)
        gc_after = gc_pauses(server.url)
        rss_mb = round(server.rss_mb())
    cores = {t: (used[t] - threads.get(t, 0.0)) / wall for t in used}
    busiest = sorted(cores.items(), key=lambda kv: -kv[1])[:5]
    return {
        "one_client_p50_ms": one["p50_ms"],
        "inputs_per_s": many["inputs_per_s"],
        "p99_ms": many["p99_ms"],
        **many["batches"],
        "server_thread_cores": {
            ("main" if t == server.proc.pid else str(t)): round(c, 2) for t, c in busiest
        },
        "idle_cores": round((_idle_cpu() - idle) / wall, 2),
        "rss_mb_after_load": rss_mb,
        "gc_pauses": {
            gen: {k: round(gc_after[gen][k] - gc_before[gen][k], 4) for k in ("count", "sum")}
            for gen in gc_after
        },
    }


def gc_pauses(url: str) -> dict[str, dict[str, float]]:
    """The server's garbage collections so far: count and seconds per generation."""
    out: dict[str, dict[str, float]] = {}
    for sample in metric_samples(url):
        kind = sample.name.removeprefix("bitpatch_gc_pause_seconds_")
        if kind in ("count", "sum"):
            out.setdefault(sample.labels["generation"], {})[kind] = sample.value
    return out


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _idle_cpu() -> float:
    """Idle CPU seconds of the whole machine, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[4]) / os.sysconf("SC_CLK_TCK")


def omp_teams(n: int = 60) -> dict[str, float]:
    """Median ms of a single-row forward: main thread, worker thread, main thread again."""
    backbone = load_backbone("default", "auto", "cpu")
    engine = MultiTaskEngine(backbone)
    engine.register("t0", random_patches(backbone, 1)[0])
    items = mixed_inputs(n, seed=2, pair_fraction=0.0)
    batches = [collate(encode_inputs(backbone.tokenizer, [x], 128), 0) for x in items]

    def timed(batch) -> float:
        started = time.perf_counter()
        engine.forward(batch, ["t0"])
        return 1000 * (time.perf_counter() - started)

    worker = ThreadPoolExecutor(1)
    return {
        "main thread": statistics.median([timed(b) for b in batches][5:]),
        "worker thread": statistics.median([worker.submit(timed, b).result() for b in batches][5:]),
        "main thread again": statistics.median([timed(b) for b in batches][5:]),
    }
