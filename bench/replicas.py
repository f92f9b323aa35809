"""`python -m bench replicas`: what sharing one store costs.

- Lag: a 2xx upload on replica A to the first prediction with that version on replica C, over
  50 uploads, 3 replicas, folder and S3 (a moto server on 127.0.0.1).
- Idle sync: CPU of a server process that follows a store of 1,000 and 10,000 tasks while
  nothing changes (the store's tasks are hard links to one patch file: written in seconds).
- `--processes 1` vs `2` on one host: mixed 16-task throughput, interleaved rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .cost import stat_cpu
from .launcher import MotoServer, ServerProcess, started_together
from .server_bench import _load_result
from .servers import PatchSource

SYNC_INTERVAL = "1"


def servers(store: str, root: Path, n: int, *flags: str, env: dict | None = None):
    """n `bitpatch serve` processes on one store, started together."""
    extra = ("--no-demo-patches", "--log-level", "warning", "--sync-interval", SYNC_INTERVAL)
    procs = [
        ServerProcess("default", store, *extra, *flags, dtype="auto", env=env, log_dir=root)
        for _ in range(n)
    ]
    return started_together(procs, timeout=600)


def _served(url: str, task: str) -> int | None:
    reply = httpx.post(f"{url}/tasks/{task}/predict", json={"inputs": ["a b"]}, timeout=30)
    return reply.json()["version"] if reply.status_code == 200 else None


def upload_lag(store: str, root: Path, source: PatchSource, uploads: int, env=None) -> dict:
    """Seconds from A's 2xx to C's first prediction with the new version."""
    lags = []
    with servers(store, root, 3, env=env) as (a, _, c):
        for i in range(uploads):
            reply = httpx.put(
                f"{a.url}/tasks/lag/patch", content=source.patch_bytes("lag", i), timeout=30
            )
            acked, version = time.monotonic(), reply.json()["version"]
            while _served(c.url, "lag") != version:
                time.sleep(0.01)
            lags.append(time.monotonic() - acked)
    lags.sort()
    return {
        "uploads": uploads,
        "p50_s": statistics.median(lags),
        "p99_s": lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))],
        "max_s": lags[-1],
    }


def many_tasks(root: Path, source: PatchSource, n: int) -> Path:
    """A folder store of n tasks, each a hard link to one patch file (same bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    original = root / "patch.safetensors"
    original.write_bytes(source.patch_bytes("t0", 0))
    for i in range(n):
        folder = root / f"t{i}"
        folder.mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(original, folder / "v1.safetensors")
        (folder / "task.json").write_text(json.dumps({"active": 1, "next_version": 2}))
    return root


def s3_many_tasks(moto: MotoServer, source: PatchSource, n: int) -> str:
    """An S3 store of n tasks (one version each), written in parallel."""
    url = moto.bucket_url(f"idle-{n}")
    bucket, prefix = url[5:].split("/", 1)
    client, data = moto.client(), source.patch_bytes("t0", 0)
    pointer = json.dumps({"active": 1, "next_version": 2}).encode()

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/t{i}/v1.safetensors", Body=data)
        client.put_object(Bucket=bucket, Key=f"{prefix}/t{i}/task.json", Body=pointer)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    return url


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    return stat_cpu(Path(f"/proc/{pid}/stat"))


def idle_sync_cost(store: str, root: Path, env: dict | None, seconds: float) -> dict:
    """CPU % of one core a server spends while following an unchanging store."""
    with servers(store, root, 1, env=env) as (server,):
        time.sleep(2)
        before, started = cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(server.proc.pid) - before
        tasks = httpx.get(f"{server.url}/readyz", timeout=30).json()["tasks"]
        return {"tasks": tasks, "cpu_percent": 100 * used / (time.monotonic() - started)}


def wait_all_ready(url: str, answers: int = 20, timeout: float = 300) -> None:
    """Until `answers` new connections in a row find a ready process (every process is up)."""
    started, streak = time.monotonic(), 0
    while streak < answers and time.monotonic() - started < timeout:
        ok = httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        streak = streak + 1 if ok else 0
        time.sleep(0.05 if ok else 0.5)


def processes_throughput(root: Path, source: PatchSource, rounds: int, seconds: float) -> dict:
    """Mixed 16-task inputs/s of `--processes 1` and `--processes 2`, rounds interleaved."""
    out = {"1": [], "2": []}
    for r in range(rounds):
        for n in ("1", "2") if r % 2 == 0 else ("2", "1"):
            with servers(str(root / f"p{n}-{r}"), root, 1, "--processes", n) as (server,):
                wait_all_ready(server.url)
                source.upload(server.url, 16)
                _load_result(server.url, 16, 64, min(seconds, 3), 4)  # warm-up
                out[n].append(_load_result(server.url, 16, 64, seconds, 4).summary())
    return {
        n: {"inputs_per_s": statistics.mean(x["inputs_per_s"] for x in runs), "rounds": runs}
        for n, runs in out.items()
    }


def run_replicas(quick: bool) -> dict:
    """Every figure of the suite in one run."""
    source, counts = PatchSource(), (100, 1000) if quick else (1000, 10_000)
    seconds = 5 if quick else 30
    with tempfile.TemporaryDirectory(prefix="bitpatch-replicas-") as tmp:
        root = Path(tmp)
        moto = MotoServer(root).start()
        try:
            out = {"lag": {}, "idle_sync": {}}
            uploads = 5 if quick else 50
            out["lag"]["folder"] = upload_lag(str(root / "lag"), root, source, uploads)
            out["lag"]["s3"] = upload_lag(moto.bucket_url("lag"), root, source, uploads, moto.env)
            for n in counts:
                store = str(many_tasks(root / f"idle-{n}", source, n))
                out["idle_sync"][f"folder@{n}"] = idle_sync_cost(store, root, None, seconds)
            s3_n = counts[0]
            s3_store = s3_many_tasks(moto, source, s3_n)
            out["idle_sync"][f"s3@{s3_n}"] = idle_sync_cost(s3_store, root, moto.env, seconds)
        finally:
            moto.stop()
        out["processes"] = processes_throughput(root, source, 2, 3 if quick else 15)
    return out


def replicas_markdown(r: dict) -> str:
    """The suite's tables."""
    lines = ["| store | uploads | lag p50 s | lag p99 s | lag max s |", "|---|---|---|---|---|"]
    for store, lag in r["lag"].items():
        lines.append(
            f"| {store} | {lag['uploads']} | {lag['p50_s']:.2f} | {lag['p99_s']:.2f} | "
            f"{lag['max_s']:.2f} |"
        )
    lines += ["", "| store @ tasks | tasks served | idle CPU % of one core |", "|---|---|---|"]
    for name, idle in r["idle_sync"].items():
        lines.append(f"| {name} | {idle['tasks']} | {idle['cpu_percent']:.2f} |")
    p = r["processes"]
    ratio = p["2"]["inputs_per_s"] / p["1"]["inputs_per_s"]
    lines += [
        "",
        f"--processes 1: {p['1']['inputs_per_s']:.1f} inputs/s; --processes 2: "
        f"{p['2']['inputs_per_s']:.1f} inputs/s ({ratio:.2f}x), mixed 16 tasks, 64 clients.",
    ]
    return "\n".join(lines)
