"""Every forward the engine can run, on the same batches of GLUE sentences: rows/s, GFLOPS,
16 mixed tasks against one task, each against the eager packed float32 walk.

Batches: B=32 GLUE sentences in arrival order (~12 real tokens a row), max 128 tokens. Every
variant runs all batches once per round; rounds interleave the variants, so the host's drift
hits each alike; the median round is reported. Then the float32 forwards on short batches (1 to
32 rows, one thread: a server worker's), and float32 servers on each forward under the same
loads, in interleaved rounds.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.forwards import SMALL_TOKENS, onnx_unavailable
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
    (it builds the graphs) and again on the cache that start left, hybrid on that cache."""
    out = []
    with tempfile.TemporaryDirectory(prefix="bitpatch-starts-") as tmp:
        cache = Path(tmp) / "forwards"
        for forward, label in (
            ("onnxruntime", "cold cache"),
            ("onnxruntime", "warm cache"),
            ("hybrid", "warm cache"),
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


def float32_forwards(backbone) -> list[str]:
    """The float32 forwards that differ on short batches and that this host serves for
    `backbone` (the default one, loaded in float32)."""
    graphs = ["onnxruntime", "hybrid"] if onnx_unavailable(backbone) is None else []
    return [*graphs, "packed"]


SHORT_ROWS = (1, 2, 4, 8, 16, 32)


def short_batches(reps: int, n_batches: int = 10, n_tasks: int = 16) -> dict:
    """ms per batch of each float32 forward on batches of 1 to 32 GLUE rows (16 tasks mixed),
    on one torch thread (a server worker's), variants interleaved; and each against packed."""
    backbone = load_backbone("default", dtype="float32", device="cpu")
    engines = {f: _engine(backbone, f, n_tasks) for f in float32_forwards(backbone)}
    sentences = glue_sentences(n_batches * max(SHORT_ROWS), seed=7)
    rows = encode_inputs(backbone.tokenizer, sentences, 128)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = [_short_row(engines, rows, size, n_batches, n_tasks, reps) for size in SHORT_ROWS]
    finally:
        torch.set_num_threads(before)
    return {"small_tokens": SMALL_TOKENS, "threads": 1, "rows": table}


def _short_row(engines, rows, size: int, n_batches: int, n_tasks: int, reps: int) -> dict:
    pad = engines["packed"].backbone.tokenizer.pad_token_id
    batches = [collate(rows[i * size : (i + 1) * size], pad) for i in range(n_batches)]
    runs = {
        f: _runner(e, batches, lambda b: [f"t{i % n_tasks}" for i in range(b)])
        for f, e in engines.items()
    }
    seconds = _interleaved(runs, reps)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / n_batches
    ms = {f: 1000 * s / n_batches for f, s in seconds.items()}
    ratios = {f: m / ms["packed"] for f, m in ms.items()}
    return {"rows": size, "real_tokens": tokens, "ms": ms, "vs_packed": ratios}


def server_forwards(seconds: float, rounds: int) -> dict:
    """float32 servers (16 tasks), one per forward, in interleaved rounds: 1 client's p50 (1
    input a request), and inputs/s of 32 clients sending 1 input and 1-4 inputs a request."""
    from .server_bench import load
    from .servers import PatchSource

    source = PatchSource()
    forwards = float32_forwards(source.backbone)
    loads = {  # figure -> (clients, most inputs a request, the load's summary key)
        "one_client_p50_ms": (1, 1, "p50_ms"),
        "c32_1_input_per_s": (32, 1, "inputs_per_s"),
        "c32_1to4_inputs_per_s": (32, 4, "inputs_per_s"),
    }
    out = {f: {name: [] for name in loads} for f in forwards}
    with tempfile.TemporaryDirectory(prefix="bitpatch-forwards-") as tmp, ExitStack() as stack:
        urls = {}
        for forward in forwards:
            flags = ("--no-demo-patches", "--log-level", "warning", "--forward", forward)
            server = ServerProcess("default", Path(tmp) / forward, *flags, dtype="float32")
            urls[forward] = stack.enter_context(server).url
            source.upload(urls[forward], 16)
            load(urls[forward], 16, 32, min(seconds, 3.0), 1)  # warm-up
        for r in range(rounds):
            for forward in forwards if r % 2 == 0 else forwards[::-1]:
                for name, (clients, inputs, figure) in loads.items():
                    result = load(urls[forward], 16, clients, seconds, inputs)
                    out[forward][name].append(result[figure])
    means = {f: {name: statistics.mean(v) for name, v in fig.items()} for f, fig in out.items()}
    return means | {"rounds": rounds, "seconds": seconds}


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
    if "short" in result:
        lines += _short_lines(result["short"])
    if "servers" in result:
        lines += _server_lines(result["servers"])
    return "\n".join(lines)


def _short_lines(short: dict) -> list[str]:
    forwards = list(short["rows"][0]["ms"])
    lines = [
        "",
        f"Short batches, float32, {short['threads']} thread, 16 tasks mixed (hybrid: ONNX "
        f"Runtime up to {short['small_tokens']} real tokens, the eager walk above):",
        "",
        "| rows | real tokens | "
        + " | ".join(f"{f} ms" for f in forwards)
        + " | "
        + " | ".join(f"{f} / packed" for f in forwards if f != "packed")
        + " |",
        "|" + "---|" * (2 + 2 * len(forwards) - 1),
    ]
    for r in short["rows"]:
        ms = " | ".join(f"{r['ms'][f]:.1f}" for f in forwards)
        ratio = " | ".join(f"{r['vs_packed'][f]:.2f}" for f in forwards if f != "packed")
        lines.append(f"| {r['rows']} | {r['real_tokens']:.0f} | {ms} | {ratio} |")
    return lines


def _server_lines(servers: dict) -> list[str]:
    forwards = [f for f in servers if f not in ("rounds", "seconds")]
    lines = [
        "",
        f"float32 servers, 16 tasks, {servers['rounds']} interleaved rounds of "
        f"{servers['seconds']:.0f} s per load:",
        "",
        "| forward | 1 client p50 ms | 32 clients x 1 input: inputs/s "
        "| 32 clients x 1-4 inputs: inputs/s |",
        "|---|---|---|---|",
    ]
    for f in forwards:
        s = servers[f]
        lines.append(
            f"| {f} | {s['one_client_p50_ms']:.1f} | {s['c32_1_input_per_s']:.0f} "
            f"| {s['c32_1to4_inputs_per_s']:.0f} |"
        )
    return lines
