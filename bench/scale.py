"""Thousands of tasks on one replica: start-up to ready on a folder and a moto S3 store (first
start reading every task, then from the store's snapshot), memory per task, the first predict
to a task not yet loaded against the next one, /metrics and listings with every task busy
(the default --metrics-tasks beside --metrics-tasks 10000: a series per task), and a bulk
`bitpatch push --jobs 8` into an empty server."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bitpatch.server.store import open_store
from bitpatch.server.store.folder import FolderStore

from .launcher import MotoServer, ServerProcess, started_together
from .servers import PatchSource

FULL = {"folder": (1_000, 10_000, 50_000), "s3": (1_000, 10_000)}
QUICK = {"folder": (1_000,), "s3": (1_000,)}
SAMPLED = 200  # tasks whose first and second predict are timed
TOUCHED = 10_000  # tasks given one predict each (memory per resident task, busy metrics)
WRITERS = 16  # threads writing a store before a start
FIRST_START_TIMEOUT = 1200  # a first start reads every task: minutes on moto's S3 at 10,000


def renamed(data: bytes, task: str) -> bytes:
    """The same patch under another task name (its metadata header rewritten, tensors kept)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["task"] = task
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the tensor data 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def task_name(i: int) -> str:
    return f"t{i:05d}"


def fill_folder(root: Path, base: bytes, n: int) -> str:
    """n tasks written through the folder store (WRITERS at once)."""
    store = FolderStore(root)
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda i: store.add_version(task_name(i), renamed(base, task_name(i)),
                                                  activate=True), range(n)))  # fmt: skip
    return str(root)


def fill_s3(moto: MotoServer, base: bytes, n: int) -> str:
    """n tasks as the S3 store lays them out (version, bytes marker, pointer), written by
    WRITERS threads; the change log starts empty, as in a store filled by a migration."""
    from bitpatch.patches.patch_file import sha256_bytes

    url = moto.bucket_url(f"scale-{n}")
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client = moto.client()

    def put(i: int) -> None:
        task = task_name(i)
        data = renamed(base, task)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{task}/v1.safetensors", Body=data)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{task}/sha256/{sha256_bytes(data)}",
                          Body=b"1")  # fmt: skip
        pointer = json.dumps({"active": 1, "next_version": 2}).encode()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{task}/task.json", Body=pointer)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(put, range(n)))
    return url


def predict_ms(http: httpx.Client, task: str) -> float:
    started = time.perf_counter()
    reply = http.post(f"/tasks/{task}/predict", json={"inputs": ["a short review"]})
    reply.raise_for_status()
    return 1000 * (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def touch_all(url: str, tasks: list[str]) -> None:
    """One predict on each task, 8 at a time."""
    with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: predict_ms(http, t), tasks))


def wait_for_snapshot(url: str, timeout: float = 30.0) -> bool:
    """Whether the store holds a snapshot (the first server writes one after its start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if open_store(url).snapshot_names():
            return True
        time.sleep(0.5)
    return False


def measure_store(url: str, n: int, env: dict, logs: Path, rng: random.Random) -> dict:
    """Starts to ready (every task read, then the snapshot), memory, first-touch latency."""
    args = ("default", url, "--no-demo-patches")
    out: dict = {"tasks": n}
    first = ServerProcess(*args, env=env, log_dir=logs)
    with started_together([first], timeout=FIRST_START_TIMEOUT):  # may read every task
        out["ready_s_reading_every_task"] = round(first.ready_seconds, 2)
        out["snapshot_written"] = wait_for_snapshot(url)
    with ServerProcess(*args, env=env, log_dir=logs) as server:
        out["ready_s_from_snapshot"] = round(server.ready_seconds, 2)
        out["rss_mb_ready"] = round(server.rss_mb(), 1)
        sample = rng.sample(range(n), min(SAMPLED, n))
        with httpx.Client(base_url=server.url, timeout=60) as http:
            predict_ms(http, task_name(sample[0]))  # the first forward of the process
            first = [predict_ms(http, task_name(i)) for i in sample[1:]]
            second = [predict_ms(http, task_name(i)) for i in sample[1:]]
        out["first_predict_ms"] = {"p50": pct(first, 0.5), "p99": pct(first, 0.99)}
        out["next_predict_ms"] = {"p50": pct(second, 0.5), "p99": pct(second, 0.99)}
        out["first_touch_extra_ms_p50"] = round(pct(first, 0.5) - pct(second, 0.5), 2)
        touched = [task_name(i) for i in range(min(n, TOUCHED))]
        touch_all(server.url, touched)
        out["rss_mb_touched"] = round(server.rss_mb(), 1)
        out["touched"] = len(touched)
        out["mb_per_resident_task"] = round(
            (out["rss_mb_touched"] - out["rss_mb_ready"]) / len(touched), 4
        )
        if n >= TOUCHED or n == max(QUICK["folder"]):
            out["listing"] = listing_figures(server.url)
    return out


def scrape(url: str, path: str, reps: int = 5, **params) -> dict:
    """Median time and size of a GET."""
    times, size = [], 0
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(reps):
            started = time.perf_counter()
            reply = http.get(path, params=params)
            times.append(1000 * (time.perf_counter() - started))
            reply.raise_for_status()
            size = len(reply.content)
    return {"ms": round(statistics.median(times), 1), "bytes": size}


def listing_figures(url: str) -> dict:
    """/metrics, /stats/tasks and a /tasks page with every task busy."""
    metrics = scrape(url, "/metrics")
    lines = httpx.get(f"{url}/metrics", timeout=120).text.count("\n")
    return {
        "metrics": metrics | {"lines": lines},
        "stats_tasks_page": scrape(url, "/stats/tasks", limit=1000, sort="requests"),
        "tasks_page": scrape(url, "/tasks", limit=1000),
    }


def unbounded_metrics(url: str, n: int, env: dict, logs: Path) -> dict:
    """/metrics with a series per task (--metrics-tasks 10000), every task busy."""
    flags = ("--no-demo-patches", "--metrics-tasks", "10000")
    with ServerProcess("default", url, *flags, env=env, log_dir=logs) as server:
        touch_all(server.url, [task_name(i) for i in range(min(n, TOUCHED))])
        metrics = scrape(server.url, "/metrics", reps=3)
        lines = httpx.get(f"{server.url}/metrics", timeout=120).text.count("\n")
    return metrics | {"lines": lines}


def measure_push(base: bytes, n: int, root: Path) -> dict:
    """`bitpatch push FOLDER --jobs 8` of n patches into an empty server (folder store)."""
    folder = root / f"push-{n}"
    folder.mkdir()
    for i in range(n):
        (folder / f"{task_name(i)}.safetensors").write_bytes(renamed(base, task_name(i)))
    with ServerProcess("default", root / f"push-store-{n}", "--no-demo-patches") as server:
        command = [sys.executable, "-m", "bitpatch", "push", str(folder), "--url", server.url,
                   "--jobs", "8"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        rss = server.rss_mb()
    summary = json.loads(done.stdout)
    return {"patches": n, "seconds": round(seconds, 1), "created": summary["created"],
            "refused": summary["refused"], "per_second": round(n / seconds, 1),
            "rss_mb_after": round(rss, 1)}  # fmt: skip


def run_scale(quick: bool) -> dict:
    """Every measurement, per store and task count."""
    counts, rng = (QUICK if quick else FULL), random.Random(0)
    base = PatchSource().patch_bytes("t", 0)
    results: dict = {"host": host_line(), "patch_bytes": len(base)}
    with tempfile.TemporaryDirectory(prefix="bitpatch-scale-") as tmp:
        root = Path(tmp)
        moto = MotoServer(root).start()
        os.environ.update(moto.env)  # this process reads the S3 stores too
        try:
            with ServerProcess("default", root / "empty", "--no-demo-patches") as empty:
                results["ready_s_empty_store"] = round(empty.ready_seconds, 2)
                results["rss_mb_empty_store"] = round(empty.rss_mb(), 1)
            for kind, sizes in counts.items():
                for n in sizes:
                    url = fill_folder(root / f"{kind}-{n}", base, n) if kind == "folder" \
                        else fill_s3(moto, base, n)  # fmt: skip
                    env = moto.env if kind == "s3" else {}
                    figures = measure_store(url, n, env, root, rng)
                    if kind == "folder" and n == min(max(sizes), TOUCHED):
                        figures["unbounded_metrics"] = unbounded_metrics(url, n, env, root)
                    results.setdefault(kind, {})[str(n)] = figures
                    print(kind, n, json.dumps(figures), flush=True)
            results["push"] = measure_push(base, 1_000 if quick else 10_000, root)
        finally:
            moto.stop()
    return results


def host_line() -> str:
    """CPU model, core count and vector flags of this host."""
    from .backends import host_cpu

    cpu = host_cpu()
    return f"{cpu['model']}, {os.cpu_count()} cores, flags {' '.join(cpu['flags'])}"


def scale_markdown(results: dict) -> str:
    """The tables of docs/BENCHMARKS.md."""
    lines = [f"Host: {results['host']}", "",
             "| store | tasks | ready: every task read (s) | ready: from snapshot (s) | RSS at "
             "ready (MB) | first predict p50/p99 (ms) | next predict p50/p99 (ms) | MB per "
             "resident task |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind in ("folder", "s3"):
        for n, f in results.get(kind, {}).items():
            first, second = f["first_predict_ms"], f["next_predict_ms"]
            lines.append(
                f"| {kind} | {int(n):,} | {f['ready_s_reading_every_task']} | "
                f"{f['ready_s_from_snapshot']} | {f['rss_mb_ready']} | {first['p50']} / "
                f"{first['p99']} | {second['p50']} / {second['p99']} | "
                f"{f['mb_per_resident_task']} |"
            )
    lines.append(f"\nEmpty store: ready in {results['ready_s_empty_store']} s, "
                 f"RSS {results['rss_mb_empty_store']} MB.")  # fmt: skip
    for n, f in results.get("folder", {}).items():
        if "listing" in f:
            m = f["listing"]
            lines.append(
                f"\nWith {int(n):,} busy tasks: /metrics {m['metrics']['bytes']:,} bytes, "
                f"{m['metrics']['lines']:,} lines, {m['metrics']['ms']} ms per scrape; "
                f"/stats/tasks page of 1,000: {m['stats_tasks_page']['ms']} ms; /tasks page "
                f"of 1,000: {m['tasks_page']['ms']} ms."
            )
        if "unbounded_metrics" in f:
            u = f["unbounded_metrics"]
            lines.append(f"A series per task (--metrics-tasks 10000): {u['bytes']:,} bytes, "
                         f"{u['lines']:,} lines, {u['ms']} ms per scrape.")  # fmt: skip
    p = results["push"]
    lines.append(f"\n`bitpatch push --jobs 8` of {p['patches']:,} patches: {p['seconds']} s "
                 f"({p['per_second']}/s), {p['refused']} refused.")  # fmt: skip
    return "\n".join(lines)
