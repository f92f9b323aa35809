"""What a shadow costs: one server, 16 tasks each with a candidate version; the same load with
no rollout and with every task shadowing 10% and 100% of its requests (a shadowed request's
rows run twice, in the same forwards), rounds interleaved. Reports throughput and the served
requests' latency at 32 clients and at 1 client, and the shadow rows compared."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

from .loadgen import LoadResult, run_load
from .server_bench import BenchConfig, bench_server, request_maker
from .servers import PatchSource

TASKS = 16
SCENARIOS = {"no rollout": 0, "10% shadow": 10, "100% shadow": 100}  # percent shadowed


def set_shadows(url: str, percent: int) -> None:
    """Every task shadowed by its version 2 on `percent` of its requests (0: no rollout)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(TASKS):
            if percent:
                body = {"shadow": {"version": 2, "percent": percent}}
                http.put(f"/tasks/t{i}/rollout", json=body).raise_for_status()
            else:
                http.delete(f"/tasks/t{i}/rollout").raise_for_status()


def shadow_rows(url: str) -> int:
    """Shadow rows compared so far (this rollout's) over every task."""
    with httpx.Client(base_url=url, timeout=60) as http:
        figures = [http.get(f"/tasks/t{i}/rollout").json()["figures"] for i in range(TASKS)]
    return sum(f.get("2", {}).get("shadow_rows", 0) for f in figures)


def run_rollouts(quick: bool, dtype: str = "auto") -> dict:
    """Interleaved rounds of both scenarios at 32 and 1 clients."""
    cfg = BenchConfig(quick=quick, dtype=dtype)
    rounds, seconds = (1, 1.0) if quick else (4, 6.0)
    source = PatchSource()
    make = request_maker(TASKS, max_inputs=4)
    results = {(s, c): LoadResult() for s in SCENARIOS for c in (32, 1)}
    compared = 0
    with (
        tempfile.TemporaryDirectory(prefix="bitpatch-rollouts-") as tmp,
        bench_server(Path(tmp) / "store", cfg) as srv,
    ):
        upload_versions(srv.url, source)
        asyncio.run(run_load(srv.url, make, 32, cfg.warm_up_seconds))
        for _ in range(rounds):
            for scenario, percent in SCENARIOS.items():
                set_shadows(srv.url, percent)
                for clients in (32, 1):
                    run = asyncio.run(run_load(srv.url, make, clients, seconds))
                    results[(scenario, clients)].merge(run)
                if percent:
                    compared += shadow_rows(srv.url)
    rows = {f"{s}, {c} clients": r.summary() for (s, c), r in results.items()}
    return {"tasks": TASKS, "rounds": rounds, "round_seconds": seconds, "dtype": dtype,
            "shadow_rows_compared": compared, "scenarios": rows}  # fmt: skip


def upload_versions(url: str, source: PatchSource) -> None:
    """t0..t15: version 1 active, version 2 a candidate."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(TASKS):
            for version, activate in ((1, "true"), (2, "false")):
                data = source.patch_bytes(f"t{i}", 1000 * version + i)
                reply = http.put(f"/tasks/t{i}/patch", content=data, params={"activate": activate})
                reply.raise_for_status()
            body = {"inputs": ["warm"], "version": 2}  # the candidate resident
            http.post(f"/tasks/t{i}/predict", json=body).raise_for_status()


def rollouts_markdown(results: dict) -> str:
    """The scenarios as a table, with the shadow's ratios."""
    rows = results["scenarios"]
    lines = [
        "| scenario | requests/s | inputs/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['requests_per_s']:.1f} | {row['inputs_per_s']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |"
        )
    for clients in (32, 1):
        off = rows[f"no rollout, {clients} clients"]
        for scenario in list(SCENARIOS)[1:]:
            on = rows[f"{scenario}, {clients} clients"]
            lines.append(
                f"\n{clients} clients: {scenario} / none: throughput "
                f"{on['requests_per_s'] / off['requests_per_s']:.3f}x, p99 "
                f"{on['p99_ms'] / off['p99_ms']:.3f}x"
            )
    lines.append(f"\nshadow rows compared: {results['shadow_rows_compared']}")
    return "\n".join(lines)
