"""How to add a per-token task bias to a packed Linear output (`python -m bench biasadd`)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def _ms(run, reps: int = 30) -> float:
    for _ in range(3):
        run()
    started = time.perf_counter()
    for _ in range(reps):
        run()
    return 1000 * (time.perf_counter() - started) / reps


def _variants(dtype: torch.dtype, tokens: int, rows: int, tasks: int) -> dict:
    x = torch.randn(tokens, 384, dtype=dtype)  # (N, H)
    weight = torch.randn(1536, 384, dtype=dtype)  # (D, H)
    table = torch.randn(tasks, 1536, dtype=dtype)  # (U, D)
    token_task = (torch.arange(tokens) * rows // tokens) % tasks  # (N,)
    onehot = F.one_hot(token_task, tasks).to(dtype)  # (N, U)
    return {
        "one task, bias fused into the Linear": lambda: F.linear(x, weight, table[0]),
        "gather (N, D) bias, addmm": lambda: torch.addmm(
            table.index_select(0, token_task), x, weight.T
        ),
        "Linear, then += onehot (N, U) @ table (U, D)": lambda: F.linear(x, weight).addmm_(
            onehot, table
        ),
    }


def compare(tokens: int = 2048, rows: int = 32, tasks: int = 16) -> list[dict]:
    """ms per (N x 384) @ (384 x 1536) Linear with each way of adding 16 tasks' biases."""
    out = []
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            for name, run in _variants(dtype, tokens, rows, tasks).items():
                out.append({"dtype": str(dtype)[6:], "variant": name, "ms": _ms(run)})
    return out


def format_rows(rows: list[dict]) -> str:
    """Markdown table."""
    lines = ["| dtype | variant | ms |", "|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['variant']} | {r['ms']:.2f} |" for r in rows]
    return "\n".join(lines)
