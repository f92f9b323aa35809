"""Every forward the engine can run, on the same batches of GLUE sentences: rows/s, GFLOPS,
16 mixed tasks against one task, each against the eager packed float32 walk.

Batches: B=32 GLUE sentences in arrival order (~12 real tokens a row), max 128 tokens. Every
variant runs all batches once per round; rounds interleave the variants, so the host's drift
hits each alike; the median round is reported.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.forwards import onnx_unavailable
from bitpatch.patches.packed import PLAIN_LINEAR
from bitpatch.patches.tuning import cpu_has_bf16

from .launcher import ServerProcess
from .micro import random_patches
from .workload import glue_sentences

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
BASELINE = ("float32", "packed")  # the eager packed walk in float32


def host_cpu() -> dict:
    """The CPU's model name and the flags that decide kernels (what every figure is beside)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "model": model,
        "flags": [f for f in CPU_FLAGS if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def glue_batches(tokenizer, batches: int, batch_size: int = 32) -> list[dict]:
    """`batches` padded batches of GLUE sentences in arrival order."""
    sentences = glue_sentences(batches * batch_size, seed=3)
    rows = encode_inputs(tokenizer, sentences, 128)
    return [
        collate(rows[i : i + batch_size], tokenizer.pad_token_id)
        for i in range(0, len(rows), batch_size)
    ]


def useful_flops(model, batches: list[dict]) -> float:
    """Multiply-adds x2 of the real tokens: every Linear, and attention within each row."""
    config = model.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for batch in batches:
        lengths = batch["attention_mask"].sum(1).double()  # (B,)
        tokens = float(lengths.sum())
        linear = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)
        attention = 4 * float((lengths**2).sum()) * hidden
        total += layers * (linear + attention)
    return total


def variants() -> list[tuple[str, str]]:
    """(dtype, forward) pairs this host runs: every float32 forward the backbone supports, and
    bfloat16 where the CPU multiplies it natively."""
    probe = load_backbone("default", dtype="float32", device="cpu")
    out = [("float32", "onnxruntime")] if onnx_unavailable(probe) is None else []
    out += [("float32", "packed"), ("float32", "padded")]
    return out + ([("bfloat16", "packed")] if cpu_has_bf16() else [])


def run_backends(reps: int = 5, n_batches: int = 20, n_tasks: int = 16) -> dict:
    """Per (dtype, forward): ms per batch, rows/s, GFLOPS, single vs mixed, vs the baseline."""
    engines, batches, flops = {}, None, 0.0
    for dtype, forward in variants():
        backbone = load_backbone("default", dtype=dtype, device="cpu")
        engine = _engine(backbone, forward, n_tasks)
        engines[(dtype, forward)] = engine
        kernel = getattr(engine.backbone_forward, "linear", PLAIN_LINEAR)
        if kernel is not PLAIN_LINEAR:  # the same walk on F.linear: what the kernel gains
            plain = _engine(backbone, forward, n_tasks)
            plain.backbone_forward.linear = PLAIN_LINEAR
            engines[(dtype, f"{forward}, F.linear")] = plain
            engines[(dtype, f"{forward}, {kernel.name}")] = engines.pop((dtype, forward))
        if batches is None:
            batches = glue_batches(backbone.tokenizer, n_batches)
            flops = useful_flops(backbone.model, batches)
    runs = {}
    for key, engine in engines.items():
        runs[(*key, 1)] = _runner(engine, batches, lambda b: ["t0"] * b)
        runs[(*key, n_tasks)] = _runner(
            engine, batches, lambda b: [f"t{i % n_tasks}" for i in range(b)]
        )
    seconds = _interleaved(runs, reps)
    rows = sum(int(b["input_ids"].shape[0]) for b in batches)
    base = seconds[(*BASELINE, n_tasks)]
    table = []
    for (dtype, forward, tasks), s in seconds.items():
        table.append(
            {
                "dtype": dtype,
                "forward": forward,
                "tasks": tasks,
                "ms_per_batch": 1000 * s / len(batches),
                "rows_per_s": rows / s,
                "gflops": flops / s / 1e9,
                "mixed_vs_single": s / seconds[(dtype, forward, 1)] if tasks > 1 else 1.0,
                "speed_vs_eager_packed_fp32": base / s,
            }
        )
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return {
        "host": host_cpu(),
        "batches": len(batches),
        "batch_size": 32,
        "real_tokens_per_row": tokens / rows,
        "rounds": reps,
        "rows": table,
    }


def _engine(backbone, forward: str, n_tasks: int) -> MultiTaskEngine:
    """An engine on `forward` with `n_tasks` random patches, warmed up."""
    engine = MultiTaskEngine(backbone, forward)
    for patch in random_patches(backbone, n_tasks):
        engine.register(patch.task, patch)
    engine.warm_up()
    return engine


def start_times() -> list[dict]:
    """`bitpatch serve --dtype float32` (default backbone, demo patches) with each forward:
    seconds from process start to ready and RSS; onnxruntime with an empty forward cache
    (it builds the graph) and again on the cache that start left."""
    out = []
    with tempfile.TemporaryDirectory(prefix="bitpatch-starts-") as tmp:
        cache = Path(tmp) / "forwards"
        for forward, label in (
            ("onnxruntime", "cold cache"),
            ("onnxruntime", "warm cache"),
            ("packed", ""),
        ):
            store = Path(tmp) / f"store-{len(out)}"
            flags = ("--forward", forward, "--forward-cache", str(cache))
            with ServerProcess("default", store, *flags, dtype="float32") as server:
                out.append(
                    {
                        "forward": forward,
                        "cache": label,
                        "ready_s": server.ready_seconds,
                        "rss_mb": server.rss_mb(),
                    }
                )
    return out


def _runner(engine: MultiTaskEngine, batches: list[dict], keys_of):
    def run():
        for batch in batches:
            engine.forward(batch, keys_of(int(batch["input_ids"].shape[0])))

    return run


def _interleaved(runs: dict, reps: int) -> dict:
    """Median seconds of each run over `reps` rounds, variants interleaved, after a warm-up."""
    for run in runs.values():
        run()
    times = {key: [] for key in runs}
    for r in range(reps):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for key in order:
            started = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - started)
    return {key: statistics.median(t) for key, t in times.items()}


def backends_markdown(result: dict) -> str:
    """The table for docs/BENCHMARKS.md."""
    host = result["host"]
    lines = [
        f"Host: {host['model']}, flags {' '.join(host['flags'])}, torch capability "
        f"{host['torch_capability']}, {host['threads']} threads. {result['batches']} batches of "
        f"B={result['batch_size']} GLUE sentences ({result['real_tokens_per_row']:.1f} real "
        f"tokens a row), median of {result['rounds']} interleaved rounds.",
        "",
        "| dtype | forward | tasks | ms / batch | rows/s | GFLOPS | mixed / single "
        "| x eager packed fp32 (16 tasks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dtype']} | {r['forward']} | {r['tasks']} | {r['ms_per_batch']:.1f} "
            f"| {r['rows_per_s']:.0f} | {r['gflops']:.1f} | {r['mixed_vs_single']:.3f} "
            f"| {r['speed_vs_eager_packed_fp32']:.2f} |"
        )
    if "starts" in result:
        lines += ["", "| float32 server, forward | start to ready s | RSS MB |", "|---|---|---|"]
        for r in result["starts"]:
            name = f"{r['forward']} ({r['cache']})" if r["cache"] else r["forward"]
            lines.append(f"| {name} | {r['ready_s']:.1f} | {r['rss_mb']:.0f} |")
    return "\n".join(lines)
