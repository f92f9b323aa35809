"""A py-spy profile of a server under load, summed into the stages of a request.

`record` samples every thread of the server process (`py-spy record --format raw --threads`);
`summarize` files each sampled stack under the first stage whose frames it contains, per thread
(inference workers, event loop, tokenizer threads). Shares are of the samples py-spy took, which
skip threads it sees as idle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

STAGES = (  # (stage, frame substrings), the first match wins
    ("forward: backbone", ("_run_backbone", "packed_forward")),
    ("forward: heads and predictions", ("_apply_heads", "head_outputs", "_predictions")),
    ("forward: collate", ("collate",)),
    ("batcher: take, wait, resolve", ("_next_batch", "_take", "_resolve", "_wait_to_fill")),
    ("tokenize", ("encode_inputs", "RowEncoder", "tokenization_utils", "_batch_encode_plus")),
    ("decode and encode JSON", ("orjson", "decode_predict", "check_inputs", "render")),
    ("FastAPI dependencies, pydantic", ("solve_dependencies", "pydantic", "_validate")),
    ("metrics", ("prometheus_client",)),
    ("ASGI: uvicorn, starlette, middleware", ("uvicorn", "httptools", "starlette", "Middleware")),
    ("pipeline: lease, submit, release", ("registry.py", "pipeline.py", "batcher.py")),
    ("thread hand-offs", ("concurrent/futures", "threading", "asyncio")),
)


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start sampling `pid` for `seconds` into `out` (raw collapsed stacks); wait() on it.
    None when py-spy is not installed (a dev dependency)."""
    if py_spy() is None:
        return None
    command = [py_spy(), "record", "--format", "raw", "--threads", "--nonblocking", "-r", "97"]
    command += ["-d", str(max(1, int(seconds))), "-p", str(pid), "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path) -> dict:
    """Shares of the samples by thread and by (thread, stage)."""
    threads, stages, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = re.sub(r"[-_]\d+$", "", frames[0].split(": ", 1)[-1])
        stage = next(
            (s for s, keys in STAGES if any(k in f for f in frames for k in keys)), "other"
        )
        threads[thread] += int(count)
        stages[f"{thread} / {stage}"] += int(count)
        total += int(count)
    share = lambda c: {k: v / max(total, 1) for k, v in c.most_common()}  # noqa: E731
    return {"samples": total, "threads": share(threads), "stages": share(stages)}
