"""`python -m bench server`: every server figure of docs/BENCHMARKS.md in one run."""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bitpatch.server.store.folder import FolderStore

from . import profile
from .cost import bare_forward_cpu_ms_per_row, server_cost
from .launcher import ServerProcess
from .loadgen import LoadResult, run_load
from .offline import ceiling, replay, single_row_ms
from .report import UPLOADS_PER_S
from .servers import PatchSource, batch_summary, recent_batches, server_stats
from .workload import mixed_inputs


@dataclass
class BenchConfig:
    """Sizes and durations; `quick` shrinks everything for a CI smoke run."""

    quick: bool = False
    clients: int = 64
    seconds: float = 20.0
    swap_seconds: float = 60.0
    dtype: str = "auto"

    def __post_init__(self):
        if self.quick:
            self.clients, self.seconds, self.swap_seconds = 16, 1.5, 2.0

    @property
    def warm_up_seconds(self) -> float:
        """Load before each measured scenario (none in a quick run: it times nothing)."""
        return 0.0 if self.quick else min(self.seconds, 3)

    @property
    def traffic_round_seconds(self) -> float:
        """Length of one round of each traffic scenario. The mixed / single ratio moves by up
        to +-0.12 from round to round on a shared 2-core host, so full runs split each
        scenario's `seconds` into TRAFFIC_ROUNDS interleaved rounds and report the ratio's
        standard error over rounds."""
        return self.seconds if self.quick else self.seconds / TRAFFIC_ROUNDS

    @property
    def offline_inputs(self) -> int:
        """Inputs per offline ceiling measurement."""
        return 64 if self.quick else 2048

    @property
    def memory_counts(self) -> tuple[int, ...]:
        """Registered patch counts at which RSS is read."""
        return (1, 10) if self.quick else (1, 100, 1000)


INPUTS = mixed_inputs(4096, seed=3)


def bench_server(store: Path, cfg: BenchConfig, *flags: str, design: str | None = None):
    """`bitpatch serve` (or a design's engine) on the default backbone, empty store, deep
    queue."""
    extra = ("--no-demo-patches", "--log-level", "warning", "--max-queue", "100000", *flags)
    return ServerProcess("default", store, *extra, dtype=cfg.dtype, design=design)


def request_maker(n_tasks: int, max_inputs: int = 4):
    """make_request(rng) for the load generator: a random task, 1..max_inputs GLUE inputs."""

    def make(rng: random.Random):
        task = f"t{rng.randrange(n_tasks)}"
        k = rng.randint(1, max_inputs)
        start = rng.randrange(len(INPUTS) - k)
        return f"/tasks/{task}/predict", {"inputs": INPUTS[start : start + k]}

    return make


def first_requests(n: int) -> list:
    """The input of each of the first n requests that the 1-client load sends (its client 0
    draws them from random.Random(0)), for the bare forward of those same requests."""
    make, rng = request_maker(1, max_inputs=1), random.Random(0)
    return [make(rng)[1]["inputs"][0] for _ in range(n)]


def load(url: str, n_tasks: int, clients: int, seconds: float, max_inputs: int = 4) -> dict:
    """Closed-loop load; summary dict with the server's batch statistics."""
    before = server_stats(url)
    result = _load_result(url, n_tasks, clients, seconds, max_inputs)
    batches = batch_summary(before, server_stats(url), result.seconds)
    return result.summary() | {"batches": batches}


def _load_result(url, n_tasks, clients, seconds, max_inputs) -> LoadResult:
    return asyncio.run(run_load(url, request_maker(n_tasks, max_inputs), clients, seconds))


TRAFFIC = (("single", 1), ("mixed16", 16), ("mixed256", 256))
TRAFFIC_ROUNDS = 6  # full runs: each scenario takes each position in the rotation twice


def traffic_scenarios(cfg: BenchConfig, source: PatchSource, root: Path) -> dict:
    """bitpatch: single-task, mixed 16 and mixed 256, interleaved in rounds (noise hits all),
    the order rotated each round so no scenario always runs first."""
    rounds = 1 if cfg.quick else TRAFFIC_ROUNDS
    merged = {name: LoadResult() for name, _ in TRAFFIC}
    stats = {name: [] for name, _ in TRAFFIC}
    per_round = {name: [] for name, _ in TRAFFIC}  # inputs/s of each round
    forwards: list[dict] = []  # the server's mixed-16 forwards (row lengths), for the replay
    with bench_server(root / "traffic", cfg) as server:
        source.upload(server.url, 256)
        _warm_up(server.url, cfg)
        for r in range(rounds):  # each scenario takes each position in the order equally often
            for name, n_tasks in TRAFFIC[r % 3 :] + TRAFFIC[: r % 3]:
                before, last = server_stats(server.url), recent_batches(server.url)[1]
                part = _load_result(server.url, n_tasks, cfg.clients, cfg.traffic_round_seconds, 4)
                stats[name].append(batch_summary(before, server_stats(server.url), part.seconds))
                if name == "mixed16":
                    forwards += recent_batches(server.url, last)[0]
                merged[name].merge(part)
                per_round[name].append(part.inputs / part.seconds)
        out = {
            name: merged[name].summary()
            | {"batches": mean_by_key(stats[name]), "rounds_inputs_per_s": per_round[name]}
            for name, _ in TRAFFIC
        }
        out["mixed16_forwards"] = forwards
        out["one_client"] = load(server.url, 1, 1, cfg.seconds, max_inputs=1)
        out["one_client_forward_ms"] = single_row_ms(cfg.dtype, first_requests(100))
    return out


def _warm_up(url: str, cfg: BenchConfig) -> None:
    if cfg.warm_up_seconds:
        load(url, 16, cfg.clients, cfg.warm_up_seconds)


def mean_by_key(parts: list[dict]) -> dict:
    """Each key's mean over dicts with the same keys (rounds of one measurement)."""
    return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}


# scenario -> (engine, serve flags). Design (b) holds a lock around each forward, so it runs
# with one worker (all cores per forward), its best configuration.
DESIGN_SERVERS = {
    "padded": (None, ("--forward", "padded")),
    "workers1": (None, ("--workers", "1")),
    "swap": ("swap", ("--workers", "1")),
    "copies": ("copies", ()),
}


def design_scenarios(cfg: BenchConfig, source: PatchSource, root: Path) -> dict:
    """Designs (a) full copies and (b) bias swapping, 16 tasks, same HTTP layer and load."""
    out = {}
    for design, (engine, flags) in DESIGN_SERVERS.items():
        with bench_server(root / design, cfg, *flags, design=engine) as server:
            base_rss = server.rss_mb()
            source.upload(server.url, 1)
            rss_1 = server.rss_mb()
            source.upload(server.url, 15, start=1)
            rss_16 = server.rss_mb()
            _warm_up(server.url, cfg)
            out[design] = load(server.url, 16, cfg.clients, cfg.seconds)
            out[design]["rss_mb"] = {"0": base_rss, "1": rss_1, "16": rss_16}
    return out


def memory_and_cold_start(cfg: BenchConfig, source: PatchSource, root: Path) -> dict:
    """RSS with 1/100/1000 patches registered over REST; time to ready, empty and full store."""
    store = root / "memory"
    out = {"rss_mb": {}}
    with bench_server(store, cfg) as server:
        out["cold_start_empty_s"] = server.ready_seconds
        out["rss_mb"]["0"] = server.rss_mb()
        done = 0
        for count in cfg.memory_counts:
            out["upload_s_each"] = source.upload(server.url, count - done, start=done)
            done = count
            out["rss_mb"][str(count)] = server.rss_mb()
    with bench_server(store, cfg) as server:
        out[f"cold_start_{done}_s"] = server.ready_seconds
        out[f"rss_after_restart_{done}_mb"] = server.rss_mb()
    out["stored_versions"] = stored_versions(cfg, source, root / "versions")
    return out


def stored_versions(cfg: BenchConfig, source: PatchSource, root: Path) -> dict[str, float]:
    """Start-up RSS of a server whose store holds 1, then N versions of one task (written
    into the folder store directly, as a long-lived deployment accumulates them)."""
    store, rss, written = FolderStore(root / "store"), {}, 0
    for count in (1, 200) if cfg.quick else (1, 2000):
        for seed in range(written, count):
            store.add_version("t0", source.patch_bytes("t0", seed))
        store.set_active("t0", count)
        written = count
        with bench_server(root / "store", cfg) as server:
            rss[str(count)] = server.rss_mb()
    return rss


def hot_swap(cfg: BenchConfig, source: PatchSource, root: Path) -> dict:
    """The same load with and without new versions uploaded at UPLOADS_PER_S."""
    out = {}
    with bench_server(root / "swap-under-load", cfg) as server:
        source.upload(server.url, 16)
        _warm_up(server.url, cfg)
        out["without_uploads"] = load(server.url, 16, cfg.clients, cfg.swap_seconds)
        stop, uploads = threading.Event(), []
        thread = threading.Thread(target=upload_steadily, args=(server.url, source, stop, uploads))
        thread.start()
        out["with_uploads"] = load(server.url, 16, cfg.clients, cfg.swap_seconds)
        stop.set()
        thread.join()
        out["uploads"] = len(uploads)
        out["upload_failures"] = sum(1 for status in uploads if status != 201)
    return out


def upload_steadily(url: str, source: PatchSource, stop: threading.Event, log: list):
    """PUT a new version of one of the 16 tasks every 1/UPLOADS_PER_S seconds until stopped."""
    seed, interval = 10_000, 1.0 / UPLOADS_PER_S
    bodies = {s: source.patch_bytes(f"t{s % 16}", s) for s in range(seed, seed + 64)}
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            started = time.perf_counter()
            body = bodies.get(seed) or source.patch_bytes(f"t{seed % 16}", seed)
            log.append(http.put(f"/tasks/t{seed % 16}/patch", content=body).status_code)
            seed += 1
            stop.wait(max(0.0, interval - (time.perf_counter() - started)))


def per_request_cost(cfg: BenchConfig, source: PatchSource, root: Path) -> dict:
    """Server CPU per request (1 input, 32 clients, 16 tasks) against the bare forward's CPU
    per row of the same sentences (bench/cost.py)."""
    with bench_server(root / "cost", cfg) as server:
        source.upload(server.url, 16)
        _warm_up(server.url, cfg)
        spy = profile.record(server.proc.pid, cfg.seconds, root / "cost.raw")
        measured = server_cost(server.url, server.proc.pid, cfg.seconds)
        if spy is not None:
            spy.wait()
    if (root / "cost.raw").exists():
        measured["profile"] = profile.summarize(root / "cost.raw")
    bare = bare_forward_cpu_ms_per_row(64 if cfg.quick else 512)
    measured["bare_cpu_ms_per_row"] = bare
    measured["ratio_to_bare"] = measured["server_cpu_ms_per_request"] / bare
    return measured


def run_all(cfg: BenchConfig) -> dict:
    """Every section, one after another, in one run; each section's seconds in `phase_seconds`."""
    started = time.perf_counter()
    results: dict = {"config": vars(cfg).copy(), "phase_seconds": {}}

    def timed(name: str, section, *args):
        began = time.perf_counter()
        results[name] = section(*args)
        results["phase_seconds"][name] = round(time.perf_counter() - began, 1)

    timed("ceiling", lambda: {d: ceiling(d, cfg.offline_inputs) for d in ("float32", "bfloat16")})
    source = PatchSource()
    with tempfile.TemporaryDirectory(prefix="bitpatch-bench-") as tmp:
        for name, section in (
            ("cost", per_request_cost),
            ("traffic", traffic_scenarios),
            ("designs", design_scenarios),
            ("memory", memory_and_cold_start),
            ("hot_swap", hot_swap),
        ):
            timed(name, section, cfg, source, Path(tmp))
    forwards = results["traffic"].pop("mixed16_forwards")
    timed("replay", replay, cfg.dtype, forwards, 1 if cfg.quick else 2)
    results["seconds"] = time.perf_counter() - started
    return results
