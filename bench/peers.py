"""`python -m bench peers`: bitpatch beside the servers users would pick instead, in one run.

The same GLUE sentences and closed-loop HTTP load (32 clients; 1, 16 and 256 tasks; 1 and 4
inputs per request) against:
- bitpatch (`bitpatch serve`, the default backbone, bf16 where the CPU has it);
- PEFT: one backbone with a LoRA adapter per task and mixed-adapter batches, behind bitpatch's
  HTTP layer and batcher (`bench/designs.py` LoraEngine; `--workers 1`, since PEFT's
  mixed-adapter forward cannot run twice at once on one model). PEFT is installed with
  `pip install --target` into a folder of its own, put on that server's path only;
- Infinity (`infinity-emb`, its own virtual environment): one exported HF classification model
  per task (`/classify`), as many tasks as fit in memory (the projection from 1 and 16 tasks
  decides whether 256 fit), with each of its CPU engines: `infinity` its torch engine (the dtype
  bitpatch picks), `infinity_onnx` its ONNX Runtime engine (`--engine optimum`: the folders
  exported by optimum, optimized by its ORTOptimizer; launched through `infinity_onnx.py`, which
  works around two incompatibilities of infinity-emb 0.0.78 with optimum 2.x);
- the bare transformers forward offline (batches of 32, all cores): the ceiling.

Per server and task count: inputs/s, p50/p99 latency, RSS and the cold start to the first
answer with every task stored. A peer that cannot be installed is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.hf_interop import export_folder
from bitpatch.server.store.folder import FolderStore

from .launcher import ServerProcess, free_port
from .loadgen import RawRequest, run_load
from .micro import random_patches
from .workload import glue_sentences

PEERS = Path(os.environ.get("BITPATCH_PEERS_DIR", "~/.cache/bitpatch-bench/peers")).expanduser()
SENTENCES = glue_sentences(2048, seed=13)
CLIENTS = 32
INFINITY = "infinity-emb[server,torch,optimum]==0.0.78"
INFINITY_ONNX = Path(__file__).with_name("infinity_onnx.py")
MEMORY_BUDGET_MB = 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def pip_install(python: str, *args: str) -> str | None:
    """None on success, else the last lines pip printed."""
    run = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    return None if run.returncode == 0 else (run.stdout + run.stderr)[-600:]


def peft_folder() -> tuple[Path | None, str]:
    """The folder PEFT is installed in (its dependencies are bitpatch's torch and transformers,
    which the LoRA design must share to run behind bitpatch's HTTP layer), or why not."""
    folder = PEERS / "peft-site"
    if not (folder / "peft").is_dir():
        failed = pip_install(sys.executable, "--no-deps", "--target", str(folder), "peft")
        if failed:
            return None, f"pip install peft failed: {failed}"
    return folder, ""


def infinity_python() -> tuple[Path | None, str]:
    """The Python of Infinity's own virtual environment (torch as bitpatch's), or why not."""
    venv = PEERS / "infinity"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "optimum-cli").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        for requirement in (
            f"torch=={torch.__version__.split('+')[0]}",
            f"{INFINITY}",
        ):
            failed = pip_install(str(python), requirement)
            if failed:
                return None, f"pip install {requirement} failed: {failed}"
    return python, ""


def draw(rng: random.Random, tasks: int, per_request: int) -> tuple[str, list[str]]:
    """A random task and `per_request` consecutive sentences."""
    start = rng.randrange(len(SENTENCES) - per_request)
    return f"t{rng.randrange(tasks)}", SENTENCES[start : start + per_request]


def bitpatch_request(tasks: int, per_request: int):
    """make_request for the native predict route (bitpatch and the LoRA design)."""

    def make(rng):
        task, texts = draw(rng, tasks, per_request)
        body = json.dumps({"inputs": texts}).encode()
        return RawRequest(f"/tasks/{task}/predict", body, len(texts))

    return make


def infinity_request(tasks: int, per_request: int):
    """make_request for Infinity's `/classify`."""

    def make(rng):
        task, texts = draw(rng, tasks, per_request)
        return RawRequest(
            "/classify", json.dumps({"model": task, "input": texts}).encode(), len(texts)
        )

    return make


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children."""
    total = 0
    pids = [pid] + [int(p) for p in _children(pid)]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []


def measure(url: str, make_request, seconds: float) -> dict:
    """One closed-loop run (after a short warm-up)."""
    asyncio.run(run_load(url, make_request, CLIENTS, min(seconds, 4.0)))
    summary = asyncio.run(run_load(url, make_request, CLIENTS, seconds)).summary()
    keep = ("inputs_per_s", "p50_ms", "p99_ms", "errors", "error_kinds")
    return {k: summary[k] for k in keep}


def first_answer(url: str, path: str, body: dict, started: float, timeout: float = 900) -> float:
    """Seconds from `started` until `path` answers 200."""
    while time.monotonic() - started < timeout:
        try:
            if httpx.post(f"{url}{path}", json=body, timeout=30).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no answer from {url}{path} within {timeout} s")


def seed_store(folder: Path, patches) -> Path:
    """A folder store holding every patch (written directly, as a long-lived store holds them)."""
    store = FolderStore(folder)
    for patch in patches:
        store.add_version(patch.task, patch.to_bytes())
        store.set_active(patch.task, 1)
    return folder


def run_bitpatch_like(
    store: Path, tasks: int, seconds: float, *extra: str, design=None, env=None
) -> dict:
    """bitpatch (or a design behind its HTTP layer) on a store of `tasks` tasks: cold start to
    the first answer, RSS, then the load at 1 and 4 inputs per request."""
    flags = ("--no-demo-patches", "--log-level", "warning", "--max-queue", "100000", *extra)
    server = ServerProcess(
        "default", store, *flags, dtype="auto", design=design, env=env, log_dir=store.parent
    )
    started = time.monotonic()
    server.start(timeout=900)
    try:
        probe = {"inputs": ["a"]}
        out = {"cold_start_s": first_answer(server.url, "/tasks/t0/predict", probe, started)}
        for k in (1, 4):
            out[f"{k}_per_request"] = measure(server.url, bitpatch_request(tasks, k), seconds)
        out["rss_mb"] = server.rss_mb()
    finally:
        server.stop()
    return out


def run_infinity(
    python: Path, folders: list[Path], seconds: float, root: Path, engine: str = "torch"
) -> dict:
    """Infinity serving one exported model per task with `engine` (torch or optimum)."""
    port = free_port()
    if engine == "torch":
        command = [str(python.parent / "infinity_emb"), "v2", "--engine", "torch"]
        dtype = str(load_backbone_dtype()).removeprefix("torch.")  # as bitpatch's dtype=auto
    else:
        command = [str(python), "-I", str(INFINITY_ONNX), "serve", "v2", "--engine", "optimum"]
        dtype = "float32"
    command += ["--port", str(port), "--device", "cpu", "--dtype", dtype]
    command += ["--batch-size", "32", "--no-model-warmup"]
    for i, folder in enumerate(folders):
        command += ["--model-id", str(folder), "--served-model-name", f"t{i}"]
    log = open(root / f"infinity-{engine}-{len(folders)}.log", "w")  # noqa: SIM115 - its log
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    env["HF_HOME"] = str(root / "hf-home")  # its optimized graphs, per run
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        cold = first_answer(url, "/classify", {"model": "t0", "input": ["a"]}, started)
        out = {"cold_start_s": cold}
        for k in (1, 4):
            out[f"{k}_per_request"] = measure(url, infinity_request(len(folders), k), seconds)
        out["rss_mb"] = rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def load_backbone_dtype() -> torch.dtype:
    """The dtype bitpatch's `--dtype auto` picks on this host (bf16 on bf16 CPUs)."""
    from bitpatch.patches.backbone import resolve_dtype

    return resolve_dtype("auto", torch.device("cpu"))


def bare_ceiling(per_request_batch: int = 32) -> dict:
    """The bare transformers forward of the same sentences, batches of 32, all cores."""
    backbone = load_backbone("default", dtype="auto", device="cpu")
    rows = encode_inputs(backbone.tokenizer, SENTENCES[:512], 128)
    batches = [
        collate(rows[i : i + per_request_batch], backbone.tokenizer.pad_token_id)
        for i in range(0, len(rows), per_request_batch)
    ]
    with torch.inference_mode():
        backbone.model(**batches[0])
        started = time.perf_counter()
        for batch in batches:
            backbone.model(**batch)
    return {"inputs_per_s": len(rows) / (time.perf_counter() - started)}


def run_peers(quick: bool) -> dict:
    """Every server at every task count, in one run: 2 rounds (1 when quick), the servers'
    order reversed in the second, each cell the mean of its rounds."""
    counts, seconds, rounds = ((1, 16), 2.0, 1) if quick else ((1, 16, 256), 10.0, 2)
    backbone = load_backbone("default", dtype="float32", device="cpu")
    # pooled as AutoModelForSequenceClassification pools, so every task exports to the HF
    # folder Infinity serves and every server computes the same thing
    patches = [replace(p, pooling="pooler") for p in random_patches(backbone, max(counts), 21)]
    out: dict = {"counts": list(counts), "seconds": seconds, "clients": CLIENTS, "rounds": rounds}
    out["bare"] = bare_ceiling()
    peft, peft_why = peft_folder()
    infinity, infinity_why = infinity_python()
    out["skipped"] = {k: v for k, v in (("peft", peft_why), ("infinity", infinity_why)) if v}
    root_path = str(Path(__file__).resolve().parents[1])
    cells: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="bitpatch-peers-") as tmp:
        root = Path(tmp)
        stores = {n: seed_store(root / f"store-{n}", patches[:n]) for n in counts}
        for r in range(rounds):
            for n in counts:
                runs = [("bitpatch", lambda n=n: run_bitpatch_like(stores[n], n, seconds))]
                if peft is not None:
                    env = {"PYTHONPATH": os.pathsep.join([root_path, str(peft)])}
                    flags = ("--workers", "1")
                    runs.append(
                        (
                            "peft_lora",
                            lambda n=n, env=env, flags=flags: run_bitpatch_like(
                                stores[n], n, seconds, *flags, design="lora", env=env
                            ),
                        )
                    )
                for name, engine in (("infinity", "torch"), ("infinity_onnx", "optimum")):
                    if infinity is None or (quick and engine == "optimum" and n > 1):
                        continue  # quick: its exports take ~4 s a task
                    first = {k: v[0] for k, v in cells.get(name, {}).items()}
                    runs.append(
                        (
                            name,
                            lambda n=n, first=first, engine=engine: infinity_cell(
                                infinity, backbone, patches[:n], first, seconds, root, engine
                            ),
                        )
                    )
                for name, run in runs if r % 2 == 0 else runs[::-1]:
                    cells.setdefault(name, {}).setdefault(str(n), []).append(run())
    out["servers"] = {
        name: {n: mean_cell(results) for n, results in by_count.items()}
        for name, by_count in cells.items()
    }
    return out


def mean_cell(results: list[dict]) -> dict:
    """A cell's rounds averaged (a skipped cell stays skipped)."""
    if any("skipped" in r for r in results):
        return results[0]
    merged: dict = {
        "cold_start_s": sum(r["cold_start_s"] for r in results) / len(results),
        "rss_mb": max(r["rss_mb"] for r in results),
        "rounds": results,
    }
    for key in ("1_per_request", "4_per_request"):
        merged[key] = {
            field: sum(r[key][field] for r in results) / len(results)
            for field in ("inputs_per_s", "p50_ms", "p99_ms", "errors")
        }
    return merged


def infinity_cell(
    python, backbone, patches, done: dict, seconds: float, root: Path, engine: str = "torch"
) -> dict:
    """Infinity at len(patches) tasks with `engine`, or why not: a projection past the memory
    budget."""
    n = len(patches)
    if "1" in done and "16" in done and n > 16:
        per_task = (done["16"]["rss_mb"] - done["1"]["rss_mb"]) / 15
        projected = done["1"]["rss_mb"] + per_task * (n - 1)
        if projected > MEMORY_BUDGET_MB:
            return {
                "skipped": f"does not fit: {projected / 1024:.1f} GB projected "
                f"({per_task:.0f} MB per task) > {MEMORY_BUDGET_MB / 1024:.1f} GB budget"
            }
    folders = []
    for patch in patches:
        folder = root / "hf" / patch.task
        if not folder.exists():
            export_folder(backbone, patch, folder)
        folders.append(folder)
    if engine == "optimum":
        folders = onnx_folders(python, folders, root / "onnx")
    return run_infinity(python, folders, seconds, root, engine)


def onnx_folders(python: Path, folders: list[Path], out: Path) -> list[Path]:
    """optimum's ONNX export of each HF folder (the missing ones, in one process)."""
    missing = [str(f) for f in folders if not (out / f.name / "model.onnx").exists()]
    if missing:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        command = [str(python), "-I", str(INFINITY_ONNX), "export", str(out), *missing]
        subprocess.run(command, check=True, capture_output=True, env=env)
    return [out / f.name for f in folders]


def peers_markdown(r: dict) -> str:
    """The suite's table."""
    lines = [
        "| server | tasks | inputs/s, 1/request | p50 / p99 ms | inputs/s, 4/request | "
        "p50 / p99 ms | RSS MB | cold start s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, cells in r["servers"].items():
        for n, cell in cells.items():
            if "skipped" in cell:
                lines.append(f"| {name} | {n} | {cell['skipped']} | | | | | |")
                continue
            one, four = cell["1_per_request"], cell["4_per_request"]
            lines.append(
                f"| {name} | {n} | {one['inputs_per_s']:.0f} | {one['p50_ms']:.0f} / "
                f"{one['p99_ms']:.0f} | {four['inputs_per_s']:.0f} | {four['p50_ms']:.0f} / "
                f"{four['p99_ms']:.0f} | {cell['rss_mb']:.0f} | {cell['cold_start_s']:.1f} |"
            )
    lines.append(f"| bare forward, offline, B=32 | - | {r['bare']['inputs_per_s']:.0f} | | | | | |")
    errors = {
        name: sum(
            c[f"{k}_per_request"]["errors"]
            for c in cells.values()
            if "skipped" not in c
            for k in (1, 4)
        )
        for name, cells in r["servers"].items()
    }
    lines.append("\nerrors: " + ", ".join(f"{name} {n}" for name, n in errors.items()))
    for name, why in r.get("skipped", {}).items():
        lines.append(f"\n{name} skipped: {why}")
    return "\n".join(lines)
