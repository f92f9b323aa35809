"""`python -m bench soak`: a long run of mixed traffic and writes on one server; memory, file
descriptors and threads must stay flat, no request may fail and no acknowledged write may be
lost. 30 minutes by default, 3 with --quick (CI); exits non-zero when a bar is missed.

Traffic: 4 clients predicting on 16 tasks (1-4 GLUE inputs). Writes, one every ~0.3 s: uploads
(active or candidate), activations, deletions of versions, canary and shadow rollouts, ends and
promotions. Every acknowledged write updates a model of what the store must hold; at the end
every task's active version, versions and their bytes (sha256 of the downloaded file) must
equal the model.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .server_bench import INPUTS, BenchConfig, bench_server
from .servers import PatchSource

TASKS = 16
CLIENTS = 4
WRITE_PAUSE_S = 0.3
MAX_VERSIONS = 5  # a task with more gets a deletion next
BARS = {"rss_growth_percent": 5.0, "fd_growth": 4, "thread_growth": 2}


@dataclass
class TaskModel:
    """What the store must hold of one task after the acknowledged writes."""

    versions: dict[int, str] = field(default_factory=dict)  # version -> sha256
    active: int = 1
    rollout: set[int] = field(default_factory=set)  # versions a live rollout names


@dataclass
class Soak:
    """The run's shared state: counters, the model, samples."""

    url: str
    pid: int
    model: dict[str, TaskModel] = field(default_factory=dict)
    predicts: int = 0
    errors: list[str] = field(default_factory=list)
    writes: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def predict_client(soak: Soak, seed: int) -> None:
    """Closed-loop predictions on random tasks until stopped; every non-200 is an error."""
    rng = random.Random(seed)
    with httpx.Client(base_url=soak.url, timeout=60) as http:
        while not soak.stop.is_set():
            k = rng.randint(1, 4)
            start = rng.randrange(len(INPUTS) - k)
            task = f"t{rng.randrange(TASKS)}"
            try:
                reply = http.post(
                    f"/tasks/{task}/predict", json={"inputs": INPUTS[start : start + k]}
                )
                ok = reply.status_code == 200
                problem = f"{task}: {reply.status_code} {reply.text[:200]}"
            except httpx.HTTPError as err:
                ok, problem = False, f"{task}: {type(err).__name__} {err}"
            with soak.lock:
                soak.predicts += 1
                if not ok:
                    soak.errors.append(problem)


def writer(soak: Soak, source: PatchSource, seed: int) -> None:
    """One write at a time on random tasks, the model updated on every acknowledged one."""
    rng = random.Random(seed)
    counter = 10_000
    with httpx.Client(base_url=soak.url, timeout=60) as http:
        while not soak.stop.is_set():
            task = f"t{rng.randrange(TASKS)}"
            counter += 1
            kind = choose(rng, soak.model[task])
            reply = WRITES[kind](http, task, soak.model[task], rng, source, counter)
            if reply is None:
                continue
            with soak.lock:
                table = soak.writes if reply.status_code < 300 else soak.refused
                table[kind] = table.get(kind, 0) + 1
                if reply.status_code >= 500:
                    soak.errors.append(
                        f"write {kind} {task}: {reply.status_code} {reply.text[:200]}"
                    )
            time.sleep(WRITE_PAUSE_S)


def choose(rng: random.Random, task: TaskModel) -> str:
    """The next write on a task: deletions when it holds many versions."""
    if len(task.versions) > MAX_VERSIONS:
        return "delete"
    return rng.choice(["upload", "upload", "activate", "delete", "rollout", "end", "promote"])


def upload(http, task, model: TaskModel, rng, source: PatchSource, seed: int):
    data = source.patch_bytes(task, seed)
    activate = rng.random() < 0.5
    reply = http.put(
        f"/tasks/{task}/patch", content=data, params={"activate": str(activate).lower()}
    )
    if reply.status_code in (200, 201):
        body = reply.json()
        model.versions[body["version"]] = hashlib.sha256(data).hexdigest()
        if body["active"] and body["version"] != model.active:
            model.active, model.rollout = body["version"], set()
    return reply


def activate(http, task, model: TaskModel, rng, source, seed):
    version = rng.choice(sorted(model.versions))
    reply = http.post(f"/tasks/{task}/versions/{version}/activate")
    if reply.status_code == 200:
        model.active, model.rollout = version, set()
    return reply


def delete(http, task, model: TaskModel, rng, source, seed):
    free = sorted(set(model.versions) - {model.active} - model.rollout)
    if not free:
        return None
    version = rng.choice(free)
    reply = http.delete(f"/tasks/{task}/versions/{version}")
    if reply.status_code == 200:
        model.versions.pop(version)
    return reply


def rollout(http, task, model: TaskModel, rng, source, seed):
    candidates = sorted(set(model.versions) - {model.active})
    if not candidates:
        return None
    version, percent = rng.choice(candidates), rng.choice([10, 30, 50])
    body = {rng.choice(["canary", "shadow"]): {"version": version, "percent": percent}}
    reply = http.put(f"/tasks/{task}/rollout", json=body)
    if reply.status_code == 200:
        model.rollout = {version}
    return reply


def end(http, task, model: TaskModel, rng, source, seed):
    reply = http.delete(f"/tasks/{task}/rollout")
    if reply.status_code == 200:
        model.rollout = set()
    return reply


def promote(http, task, model: TaskModel, rng, source, seed):
    if not model.rollout:
        return None
    reply = http.post(f"/tasks/{task}/rollout/promote")
    if reply.status_code == 200:
        model.active, model.rollout = reply.json()["active"], set()
    return reply


WRITES = {"upload": upload, "activate": activate, "delete": delete, "rollout": rollout,
          "end": end, "promote": promote}  # fmt: skip


def sample(pid: int) -> dict:
    """The server process's resident memory (MB), open descriptors and threads, now."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    return {
        "t": time.time(),
        "rss_mb": int(fields["VmRSS"][0]) / 1024,
        "threads": int(fields["Threads"][0]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def sampler(soak: Soak, every: float) -> None:
    while not soak.stop.wait(every):
        soak.samples.append(sample(soak.pid))


def lost_writes(soak: Soak) -> list[str]:
    """Every difference between the model of acknowledged writes and what the server serves
    and the store holds (downloaded bytes)."""
    lost = []
    with httpx.Client(base_url=soak.url, timeout=60) as http:
        for task, model in sorted(soak.model.items()):
            body = http.get(f"/tasks/{task}").json()
            served = {v["version"] for v in body["versions"]}
            if body["active_version"] != model.active:
                lost.append(f"{task}: active {body['active_version']}, acknowledged {model.active}")
            if served != set(model.versions):
                lost.append(
                    f"{task}: versions {sorted(served)}, acknowledged {sorted(model.versions)}"
                )
            for version, sha in model.versions.items():
                data = http.get(f"/tasks/{task}/versions/{version}/patch").content
                if hashlib.sha256(data).hexdigest() != sha:
                    lost.append(f"{task} v{version}: the stored bytes differ from the upload")
    return lost


def growth(samples: list[dict], warm_up_s: float) -> dict:
    """After warm-up: the first and last fifth's medians of RSS, descriptors and threads."""
    start = samples[0]["t"] + warm_up_s
    after = [s for s in samples if s["t"] >= start]
    fifth = max(1, len(after) // 5)
    first, last = after[:fifth], after[-fifth:]

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    rss0, rss1 = med(first, "rss_mb"), med(last, "rss_mb")
    return {
        "samples": len(after),
        "rss_mb_start": round(rss0, 1),
        "rss_mb_end": round(rss1, 1),
        "rss_growth_percent": round(100 * (rss1 - rss0) / rss0, 2),
        "fd_growth": med(last, "fds") - med(first, "fds"),
        "thread_growth": med(last, "threads") - med(first, "threads"),
        "fds_range": [min(s["fds"] for s in after), max(s["fds"] for s in after)],
        "threads_range": [min(s["threads"] for s in after), max(s["threads"] for s in after)],
    }


def run_soak(quick: bool, minutes: float | None = None) -> dict:
    """The soak; `verdict` says whether every bar held."""
    seconds = 60 * (minutes or (3 if quick else 30))
    warm_up = min(60.0, seconds / 4)
    source = PatchSource()
    with (
        tempfile.TemporaryDirectory(prefix="bitpatch-soak-") as tmp,
        bench_server(Path(tmp) / "store", BenchConfig(dtype="float32")) as server,
    ):
        soak = Soak(server.url, server.proc.pid)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(TASKS):
                data = source.patch_bytes(f"t{i}", i)
                http.put(f"/tasks/t{i}/patch", content=data).raise_for_status()
                soak.model[f"t{i}"] = TaskModel({1: hashlib.sha256(data).hexdigest()})
        threads = [threading.Thread(target=predict_client, args=(soak, i)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=writer, args=(soak, source, 99)))
        threads.append(threading.Thread(target=sampler, args=(soak, 2.0 if quick else 10.0)))
        soak.samples.append(sample(soak.pid))
        for t in threads:
            t.start()
        time.sleep(seconds)
        soak.stop.set()
        for t in threads:
            t.join()
        lost = lost_writes(soak)
    flat = growth(soak.samples, warm_up)
    missed = [k for k, bar in BARS.items() if flat[k] > bar]
    verdict = "pass" if not (soak.errors or lost or missed) else "fail"
    return {
        "seconds": seconds, "warm_up_seconds": warm_up, "tasks": TASKS, "clients": CLIENTS,
        "predicts": soak.predicts, "errors": len(soak.errors), "error_examples": soak.errors[:5],
        "writes": soak.writes, "refused": soak.refused, "lost_writes": lost, "flat": flat,
        "bars": BARS, "missed": missed, "verdict": verdict, "samples": soak.samples,
    }  # fmt: skip


def soak_markdown(results: dict) -> str:
    """The soak's figures."""
    f = results["flat"]
    writes = sum(results["writes"].values())
    return "\n".join([
        "| minutes | predict requests | errors | acknowledged writes (refused) | lost writes | "
        "RSS after warm-up, start -> end | fds (range) | threads (range) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {results['seconds'] / 60:g} | {results['predicts']} | {results['errors']} | "
        f"{writes} ({sum(results['refused'].values())}) | {len(results['lost_writes'])} | "
        f"{f['rss_mb_start']} -> {f['rss_mb_end']} MB ({f['rss_growth_percent']:+.2f}%) | "
        f"{f['fd_growth']:+} ({f['fds_range'][0]}-{f['fds_range'][1]}) | "
        f"{f['thread_growth']:+} ({f['threads_range'][0]}-{f['threads_range'][1]}) | "
        f"{results['verdict']} |",
    ])  # fmt: skip
