"""GPU figures (`python -m bench gpu`): the offline ceiling and the server under load on CUDA.

The CPU harness (server_bench) holds the issue's targets; this suite asks the same questions
on a GPU host: what one forward can do at each batch size, how much of it the server delivers
(single-task vs mixed traffic), what a patch costs in GPU memory, and low-load latency.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine

from .launcher import ServerProcess
from .micro import random_patches
from .offline import _batches, _throughput, row_forward_ms
from .server_bench import TRAFFIC, load
from .servers import PatchSource
from .workload import mixed_inputs

DEVICE = "cuda"  # a module setting, so the suite's logic can be smoke-run on a CPU


def gpu_ceiling(batch_sizes: tuple[int, ...], n_inputs: int, dtype: str = "auto") -> dict:
    """Sequences/s of the bare forward and the engine (packed, padded; 16 tasks mixed) per
    batch size, GLUE inputs in arrival order, each forward waited for (as the server does).

    Each variant runs the batches twice: `first` (a new shape can cost tens of ms on an H100)
    and `repeat`, the steady state. `packed, no cuDNN attention` (what the server runs on CUDA)
    runs before the others, so its first pass meets every shape first; the others run with
    PyTorch's default attention kernels (cuDNN on Hopper)."""
    bare = load_backbone("default", dtype=dtype, device=DEVICE)
    engines = {
        packed: MultiTaskEngine(load_backbone("default", dtype, DEVICE), forward)
        for packed, forward in ((True, "packed"), (False, "padded"))
    }
    for engine in engines.values():
        for i, patch in enumerate(random_patches(bare, 16)):
            engine.register(f"t{i}", patch)
    items = mixed_inputs(n_inputs, seed=1)

    def run_bare(batch):
        with torch.inference_mode():
            bare.model(**{k: v.to(DEVICE) for k, v in batch.items()})
        if DEVICE.startswith("cuda"):
            torch.cuda.synchronize()

    def run_engine(engine):  # returns logits on the CPU: synchronises like the server
        return lambda b: engine.forward(b, [f"t{i % 16}" for i in range(len(b["input_ids"]))])

    variants = {"bare": run_bare, "engine": run_engine(engines[True])}
    variants["padded"] = run_engine(engines[False])
    out = {"dtype": str(bare.dtype).removeprefix("torch."), "device": gpu_name()}
    sizes = {size: _batches(bare.tokenizer, items, size, sort=False) for size in batch_sizes}
    torch.backends.cuda.enable_cudnn_sdp(False)  # first: its `first` pass meets every shape first
    try:
        for size, batches in sizes.items():
            out[str(size)] = {"packed, no cuDNN attention": _passes(variants["engine"], batches)}
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
    for size, batches in sizes.items():
        out[str(size)] |= {name: _passes(run, batches) for name, run in variants.items()}
    return out


def _passes(run, batches) -> dict:
    """Throughput of a first pass over `batches` and of a second, repeated pass."""
    return {"first": _throughput(run, batches), "repeat": _throughput(run, batches)}


def gpu_name() -> str:
    """The CUDA device's name."""
    return torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else DEVICE


def single_row_ms(n: int = 50) -> dict:
    """Median ms of one engine forward of one input on the GPU (the low-load floor): a first
    pass over `n` inputs (new lengths) and a second pass over the same inputs."""
    backbone = load_backbone("default", device=DEVICE)
    engine = MultiTaskEngine(backbone)
    engine.register("t0", random_patches(backbone, 1)[0])
    items = mixed_inputs(n, seed=2, pair_fraction=0.0)
    return {name: row_forward_ms(engine, "t0", items) for name in ("first", "repeat")}


def gpu_memory_mb(pid: int) -> float:
    """GPU memory held by process `pid`, as nvidia-smi reports it (nan when unknown)."""
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return float("nan")
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return float("nan")


def gpu_server(clients: tuple[int, ...], seconds: float, max_batch: int, *extra: str) -> dict:
    """`bitpatch serve --device cuda` under closed-loop load: single, mixed 16 and mixed 256
    tasks at each client count; GPU memory with 0, 256 and 1,256 patches; one client."""
    source = PatchSource()
    flags = ("--device", DEVICE, "--max-batch-size", str(max_batch), "--no-demo-patches")
    flags += ("--log-level", "warning", "--max-queue", "100000", *extra)
    out: dict = {"max_batch_size": max_batch, "gpu_memory_mb": {}}
    with (
        tempfile.TemporaryDirectory(prefix="bitpatch-gpu-") as tmp,
        ServerProcess("default", Path(tmp) / "store", *flags, dtype="auto") as server,
    ):
        out["cold_start_s"] = server.ready_seconds
        memory = out["gpu_memory_mb"]
        memory["0"] = gpu_memory_mb(server.proc.pid)
        source.upload(server.url, 256)
        memory["256"] = gpu_memory_mb(server.proc.pid)
        load(server.url, 16, max(clients), min(seconds, 3))  # warm-up
        for n_clients in clients:
            for name, n_tasks in TRAFFIC:
                out[f"{name}@{n_clients}"] = load(server.url, n_tasks, n_clients, seconds)
        out["one_client"] = load(server.url, 1, 1, seconds, max_inputs=1)
        source.upload(server.url, 1000, start=256)
        memory["1256"] = gpu_memory_mb(server.proc.pid)
    return out


def run_gpu(quick: bool) -> dict:
    """Every GPU figure in one run."""
    started = time.perf_counter()
    results = {
        "ceiling": gpu_ceiling((32, 128) if quick else (32, 64, 128, 256), 256 if quick else 4096),
        "single_row_ms": single_row_ms(),
    }
    clients, seconds = ((64,), 2.0) if quick else ((64, 256), 10.0)
    for max_batch in (32,) if quick else (32, 128):
        results[f"server_b{max_batch}"] = gpu_server(clients, seconds, max_batch)
    # the server's default leaves cuDNN attention off; the same load with it on
    results["server_b32_cudnn"] = gpu_server(clients, seconds, 32, "--cudnn-attention")
    results["seconds"] = time.perf_counter() - started
    return results
