"""`python -m bench sweep --env K=V`: the default server against a variant, 1 to 64 clients.

Both servers (16 tasks) stay up; each concurrency level runs on one, then the other, in
alternating order over the rounds, so drift on this shared host hits both alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .server_bench import load, mean_by_key
from .servers import BenchServer, PatchSource, metric_samples

CLIENTS = (1, 2, 4, 8, 16, 64)


def sweep(env: dict[str, str], rounds: int = 2, seconds: float = 5) -> dict[str, dict]:
    """Per server ("default", "variant") and client count: throughput, p50, p99 and the
    share of forwards run alone, each the mean over the rounds."""
    source = PatchSource()
    out: dict[str, dict] = {"default": {}, "variant": {}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        BenchServer(Path(tmp) / "a", "bitpatch", "auto") as default,
        BenchServer(Path(tmp) / "b", "bitpatch", "auto", env=env) as variant,
    ):
        servers = {"default": default, "variant": variant}
        for server in servers.values():
            source.upload(server.url, 16)
            load(server.url, 16, 64, 3)  # warm-up
        for r in range(rounds):
            for clients in CLIENTS:
                order = ("default", "variant") if r % 2 == 0 else ("variant", "default")
                for name in order:
                    level = out[name].setdefault(clients, [])
                    level.append(_measure(servers[name].url, clients, seconds / rounds))
    return {name: {c: mean_by_key(p) for c, p in levels.items()} for name, levels in out.items()}


def _measure(url: str, clients: int, seconds: float) -> dict[str, float]:
    lone_before, forwards_before = _lone_forwards(url)
    result = load(url, 16, clients, seconds)
    lone_after, forwards_after = _lone_forwards(url)
    forwards = max(forwards_after - forwards_before, 1.0)
    return {
        "inputs_per_s": result["inputs_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lone_share": (lone_after - lone_before) / forwards,
    }


def _lone_forwards(url: str) -> tuple[float, float]:
    """(forwards run alone, all forwards) so far, from /metrics."""
    values = {s.name: s.value for s in metric_samples(url)}
    return values.get("bitpatch_lone_forwards_total", 0.0), values["bitpatch_forward_seconds_count"]


def sweep_rows(results: dict[str, dict], env: dict[str, str]) -> str:
    """Markdown: both servers side by side per client count, with the variant's ratios."""
    variant = " ".join(f"{k}={v}" for k, v in env.items()) or "(same settings)"
    lines = [
        f"variant: {variant}",
        "",
        "| clients | default inputs/s | p50 ms | p99 ms | run alone | variant inputs/s | p50 ms "
        "| p99 ms | run alone | variant / default inputs/s | p50 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clients, a in results["default"].items():
        b = results["variant"][clients]
        lines.append(
            f"| {clients} | {a['inputs_per_s']:.1f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} "
            f"| {a['lone_share']:.2f} | {b['inputs_per_s']:.1f} | {b['p50_ms']:.1f} "
            f"| {b['p99_ms']:.1f} | {b['lone_share']:.2f} "
            f"| {b['inputs_per_s'] / a['inputs_per_s']:.2f} | {b['p50_ms'] / a['p50_ms']:.2f} |"
        )
    return "\n".join(lines)
