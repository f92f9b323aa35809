"""Offline figures: the bare forward's throughput at the server's batch shapes, single-row time."""

from __future__ import annotations

import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.core.scheduling import LOOKAHEAD, pick_rows

from .micro import random_patches
from .workload import mixed_inputs


def _batches(tokenizer, items, batch_size: int, sort: bool, max_length: int = 128):
    rows = encode_inputs(tokenizer, items, max_length)
    if sort:
        rows = sorted(rows, key=lambda r: len(r["input_ids"]))
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return [collate(c, tokenizer.pad_token_id) for c in chunks]


def _throughput(run, batches, workers: int = 1) -> dict:
    """Sequences/s and tokens/s of run(batch) over `batches`: on this thread, or with
    workers > 1 on that many threads at once, cores/workers torch threads each (the server's
    CPU default)."""
    seconds = _parallel_seconds(run, batches, workers) if workers > 1 else _seconds(run, batches)
    rows = sum(b["input_ids"].shape[0] for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return {
        "sequences_per_s": rows / seconds,
        "tokens_per_s": tokens / seconds,
        "ms_per_forward": 1000 * seconds * workers / len(batches),  # each worker's forwards
    }


def _seconds(run, batches) -> float:
    run(batches[0])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - started


def _parallel_seconds(run, batches, workers: int) -> float:
    cores = torch.get_num_threads()
    torch.set_num_threads(max(1, cores // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, batches[:workers]))  # warm-up, on every worker
            started = time.perf_counter()
            list(pool.map(lambda i: [run(b) for b in batches[i::workers]], range(workers)))
            return time.perf_counter() - started
    finally:
        torch.set_num_threads(cores)


def ceiling(dtype: str, n_inputs: int, batch_size: int = 32) -> dict:
    """Sequences/s and tokens/s, arrival vs length-sorted order, of: the bare transformers
    forward, the engine's packed (padding-free) forward and its padded forward, 16 tasks mixed;
    bare and packed also as 2 forwards in parallel (`-2w`, the server's CPU default)."""
    bare_backbone = load_backbone("default", dtype=dtype, device="cpu")
    patches = random_patches(bare_backbone, 16)
    engines = {}
    for name, forward in (("engine", "packed"), ("padded", "padded")):
        backbone = load_backbone("default", dtype=dtype, device="cpu")
        engines[name] = MultiTaskEngine(backbone, forward)
        for i, patch in enumerate(patches):
            engines[name].register(f"t{i}", patch)
    items = mixed_inputs(n_inputs, seed=1)
    out = {"dtype": str(bare_backbone.dtype).removeprefix("torch.")}

    def bare(batch):
        with torch.inference_mode():
            bare_backbone.model(**batch)

    def mixed(engine):
        return lambda b: engine.forward(b, [f"t{i % 16}" for i in range(len(b["input_ids"]))])

    for order, sort in (("arrival", False), ("sorted", True)):
        batches = _batches(bare_backbone.tokenizer, items, batch_size, sort)
        out[f"bare_{order}"] = _throughput(bare, batches)
        for name, engine in engines.items():
            out[f"{name}_{order}"] = _throughput(mixed(engine), batches)
        out[f"bare-2w_{order}"] = _throughput(bare, batches, workers=2)
        out[f"engine-2w_{order}"] = _throughput(mixed(engines["engine"]), batches, workers=2)
    return out


def single_row_ms(dtype: str, items: list) -> float:
    """Median ms of one engine forward of one input, over `items` (the low-load latency floor)."""
    backbone = load_backbone("default", dtype=dtype, device="cpu")
    engine = MultiTaskEngine(backbone)
    engine.register("t0", random_patches(backbone, 1)[0])
    return row_forward_ms(engine, "t0", items)


def row_forward_ms(engine: MultiTaskEngine, task: str, items: list) -> float:
    """Median ms of `engine`'s forward of one input at a time, over `items` (the first 5 left
    out as warm-up)."""
    tokenizer = engine.backbone.tokenizer
    times = []
    for item in items:
        rows = encode_inputs(tokenizer, [item], 128)
        started = time.perf_counter()
        engine.forward(collate(rows, tokenizer.pad_token_id), [task])
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[5:])


def queue_batches(rows: list[dict], batch_size: int = 32, queue_rows: int = 96) -> list[list[dict]]:
    """Batches as the server forms them under steady load: `pick_rows` on a queue of
    `queue_rows` rows in arrival order, refilled with the next arrivals after each batch
    (64 clients x 2.5 inputs leave ~96 rows queued while two 32-row batches run)."""
    arrivals = iter(rows)
    queue = [row for _, row in zip(range(queue_rows), arrivals, strict=False)]
    batches = []
    while queue:
        window = queue[: batch_size * LOOKAHEAD]
        picked = set(pick_rows([len(r["input_ids"]) for r in window], batch_size))
        batches.append([window[i] for i in sorted(picked)])
        queue = [r for i, r in enumerate(queue) if i not in picked]
        queue += [row for _, row in zip(range(len(picked)), arrivals, strict=False)]
    return batches


def synthetic_rows(lengths: list[int], tokenizer, seed: int = 0) -> list[dict]:
    """Rows of exactly these token lengths ([CLS] random words [SEP]); the forward's cost
    depends on the lengths only."""
    rng = random.Random(seed)
    high = tokenizer.vocab_size - 1
    low = min(1000, high // 2)  # past the special and unused ids of BERT vocabularies
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = []
    for length in lengths:
        words = [rng.randint(low, high) for _ in range(max(length - 2, 0))]
        ids = ([cls] + words + [sep])[:length]
        rows.append({"input_ids": ids, "token_type_ids": [0] * length})
    return rows


def replay(dtype: str, recorded: list[dict], rounds: int = 2) -> dict:
    """The server's own forwards (row lengths and task counts from `GET /stats/batches`) run
    offline: the bare transformers forward (1 and 2 at once) and the packed engine (2 at once,
    each row's task as in the server's batch mix). Best of `rounds` interleaved rounds."""
    bare_backbone = load_backbone("default", dtype=dtype, device="cpu")
    engine = MultiTaskEngine(load_backbone("default", dtype=dtype, device="cpu"))
    for i, patch in enumerate(random_patches(bare_backbone, 16)):
        engine.register(f"t{i}", patch)
    tokenizer = bare_backbone.tokenizer
    batches = [
        collate(synthetic_rows(b["lengths"], tokenizer, seed=i), tokenizer.pad_token_id)
        for i, b in enumerate(recorded)
    ]
    tasks = {id(batch): b["tasks"] for batch, b in zip(batches, recorded, strict=True)}

    def bare(batch):
        with torch.inference_mode():
            bare_backbone.model(**batch)

    def mixed(batch):
        n = min(tasks[id(batch)], 16)
        engine.forward(batch, [f"t{i % n}" for i in range(len(batch["input_ids"]))])

    runs = {"bare": (bare, 1), "bare-2w": (bare, 2), "engine-2w": (mixed, 2)}
    out: dict = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved, so drift hits every way alike
        for name, (run, workers) in runs.items():
            out[name].append(_throughput(run, batches, workers))
    best = {name: max(cells, key=lambda c: c["sequences_per_s"]) for name, cells in out.items()}
    return best | {
        "batches": len(recorded),
        "rows": sum(b["rows"] for b in recorded),
        "fill": _fill(batches),
        "server_ms_per_forward": statistics.mean(b["forward_ms"] for b in recorded),
    }


def _fill(batches) -> float:
    """Real tokens / padded tokens."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return real / sum(b["attention_mask"].numel() for b in batches)
