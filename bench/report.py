"""Benchmark results -> Markdown tables (targets with measured ratios) and a plot PNG."""

from __future__ import annotations

import statistics
from pathlib import Path

UPLOADS_PER_S = 5


def _dtype(results: dict) -> str:
    return (
        "bfloat16"
        if "bfloat16" in results["ceiling"] and results["config"]["dtype"] in ("auto", "bfloat16")
        else "float32"
    )


Row = tuple[str, str, str, bool | None]


def targets(r: dict) -> list[Row]:
    """(target, measured, bar, met) rows; met is None where a quick run cannot tell."""
    ratio, memory = _ratios(r), _memory(r)
    h = r["hot_swap"]
    failed = h["with_uploads"]["errors"] + h["upload_failures"]
    server = "server (mixed 16) / offline"
    return [
        _at_least("mixed 16-task / single-task throughput", ratio["mixed16"], "0.95"),
        _at_least("mixed 256-task / single-task throughput", ratio["mixed256"], "0.90"),
        _at_least(
            f"{server} forward of the server's own batches, replayed "
            "(best of bare 1 or 2 at once and packed engine)",
            ratio["own"],
            "0.80",
        ),
        _at_least(
            f"{server} bare forward (best of 1 or 2 at once), B=32, arrival",
            ratio["arrival"],
            "0.80",
        ),
        _at_least(
            f"{server} bare forward (best of 1 or 2 at once), B=32, sorted", ratio["sorted"], "0.80"
        ),
        _at_least(
            f"{server} packed engine (best of 1 or 2), B=32, sorted (strictest)",
            ratio["packed"],
            "0.80",
        ),
        _reported(
            "server packed / server padded forward (tuning: padding-free batches)", ratio["padded"]
        ),
        _reported("server 2 workers / 1 worker (tuning: two forwards in flight)", ratio["workers"]),
        _reported("bitpatch / design (b) biases swapped per task group, 16 tasks", ratio["swap"]),
        memory["added"],
        memory["per_task"],
        *memory["versions"],
        ("uploads under load: failed requests + failed uploads", str(failed), "0", failed == 0),
        _at_most(
            f"{UPLOADS_PER_S} uploads/s: predict p99 / p99 without uploads", ratio["p99"], "1.25"
        ),
        _at_most(
            f"{UPLOADS_PER_S} uploads/s: predict max / max without uploads", ratio["max"], "2.0"
        ),
        _at_most("1 client: p50 / bare single-row forward", ratio["low"], "1.5"),
    ]


def _at_least(target: str, value: float, bar: str, digits: int = 3) -> Row:
    return (target, f"{value:.{digits}f}", f">= {bar}", value >= float(bar))


def _at_most(target: str, value: float, bar: str, digits: int = 2) -> Row:
    return (target, f"{value:.{digits}f}", f"<= {bar}", value <= float(bar))


def _reported(target: str, value: float, bar: str = "reported") -> Row:
    return (target, f"{value:.2f}", bar, None)


def _ratios(r: dict) -> dict[str, float]:
    """Each throughput or latency ratio the targets compare, by name."""
    t, d, h = r["traffic"], r["designs"], r["hot_swap"]
    served = t["mixed16"]["inputs_per_s"]
    ceiling = r["ceiling"][_dtype(r)]
    best = {  # the faster of one forward at a time and two in parallel (when measured)
        key: max(
            ceiling[k]["sequences_per_s"] for k in (key, key.replace("_", "-2w_")) if k in ceiling
        )
        for key in ("bare_arrival", "bare_sorted", "engine_sorted")
    }
    return {
        "mixed16": served / t["single"]["inputs_per_s"],
        "mixed256": t["mixed256"]["inputs_per_s"] / t["single"]["inputs_per_s"],
        "arrival": served / best["bare_arrival"],
        "sorted": served / best["bare_sorted"],
        "packed": served / best["engine_sorted"],
        "own": served / replay_best(r["replay"]),
        "padded": served / d["padded"]["inputs_per_s"],
        "workers": served / d["workers1"]["inputs_per_s"],
        "swap": served / d["swap"]["inputs_per_s"],
        "p99": h["with_uploads"]["p99_ms"] / h["without_uploads"]["p99_ms"],
        "max": h["with_uploads"]["max_ms"] / h["without_uploads"]["max_ms"],
        "low": t["one_client"]["p50_ms"] / t["one_client_forward_ms"],
    }


def _memory(r: dict) -> dict[str, Row]:
    """RSS added by the most patches measured, and memory per task vs design (a)'s copies."""
    rss = r["memory"]["rss_mb"]
    most = max(int(k) for k in rss)
    added = rss[str(most)] - rss["0"]
    copies = r["designs"]["copies"]["rss_mb"]
    full = most >= 1000
    return {
        "added": (
            f"RSS added by {most} patches (MB)",
            f"{added:.0f}",
            "<= 200" if full else "n/a (quick run)",
            added <= 200 if full else None,
        ),
        "per_task": (
            "memory per task: design (a) copies vs bitpatch (MB)",
            f"{(copies['16'] - copies['1']) / 15:.1f} vs {added / most:.3f}",
            "reported",
            None,
        ),
        "versions": _stored_versions(r["memory"]),
    }


def _stored_versions(memory: dict) -> list[Row]:
    """Start-up RSS with many stored versions of one task, per version kept."""
    stored = memory.get("stored_versions")
    if not stored:
        return []
    most = max(int(k) for k in stored)
    per_version_kb = (stored[str(most)] - stored["1"]) * 1024 / (most - 1)
    return [
        (
            f"start-up RSS with {most} stored versions vs 1 (MB)",
            f"{stored[str(most)]:.0f} vs {stored['1']:.0f}",
            "reported",
            None,
        ),
        _reported(f"start-up RSS per stored version (KB), {most} stored", per_version_kb),
    ]


def replay_best(replay: dict) -> float:
    """Sequences/s of the fastest offline way to run the server's own batches."""
    return max(replay[k]["sequences_per_s"] for k in REPLAY_NAMES)


REPLAY_NAMES = {
    "bare": "bare transformers forward (padded), 1 at once on 2 threads",
    "bare-2w": "bare transformers forward (padded), 2 at once",
    "engine-2w": "packed engine, the batch's task mix, 2 at once",
}

CEILING_NAMES = {
    "engine": "engine, packed",
    "padded": "engine, padded",
    "bare-2w": "bare, 2 at once (cores/2 threads each)",
    "engine-2w": "engine, packed, 2 at once",
}


def _ceiling_row(dtype: str, what: str, order: str, cell: dict) -> str:
    name = CEILING_NAMES.get(what, what)
    return (
        f"| {dtype} | {name} | {order} | {cell['sequences_per_s']:.0f} | "
        f"{cell['tokens_per_s']:.0f} |"
    )


def round_ratio(r: dict, scenario: str) -> tuple[float, float, int] | None:
    """Mean and standard error over rounds of `scenario` / single-task throughput, each round
    paired with the single-task round of the same rotation (None for a single round)."""
    single = r["traffic"]["single"].get("rounds_inputs_per_s", [])
    other = r["traffic"][scenario].get("rounds_inputs_per_s", [])
    if len(single) < 2:
        return None
    ratios = [o / s for o, s in zip(other, single, strict=True)]
    return statistics.mean(ratios), statistics.stdev(ratios) / len(ratios) ** 0.5, len(ratios)


def _round_lines(r: dict) -> list[str]:
    found = {label: round_ratio(r, s) for s, label in (("mixed16", "16"), ("mixed256", "256"))}
    parts = [f"mixed {k} / single {v[0]:.3f} +- {v[1]:.3f}" for k, v in found.items() if v]
    if not parts:
        return []
    rounds = len(r["traffic"]["single"]["rounds_inputs_per_s"])
    head = f"Round by round (interleaved rounds, mean +- standard error over {rounds}): "
    return ["", head + "; ".join(parts) + "."]


def markdown(r: dict) -> str:
    """Every section as Markdown."""
    lines = ["### Targets", "", "| target | measured | bar | met |", "|---|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "-"}
    lines += [f"| {a} | {b} | {c} | {verdict[ok]} |" for a, b, c, ok in targets(r)]
    lines += _round_lines(r)
    lines += ["", *cost_lines(r), "", *_ceiling_lines(r), "", *_replay_lines(r)]
    lines += ["", *_load_lines(r)]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in r.get("phase_seconds", {}).items())
    whole = f"Whole run: {r['seconds'] / 60:.1f} minutes" + (f" ({phases})" if phases else "")
    lines += ["", *_memory_lines(r), "", whole + "."]
    return "\n".join(lines)


def cost_lines(r: dict) -> list[str]:
    """Server CPU per request and where it goes (bench/cost.py)."""
    c = r.get("cost")
    if not c:
        return []
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["shares"].items())
    return [
        "### Server CPU per request (1 input, 32 clients, 16 tasks)",
        "",
        f"server CPU **{c['server_cpu_ms_per_request']:.2f} ms per request** "
        f"({c['requests_per_s']:.0f} requests/s, {c['errors']} errors); bare transformers bf16 "
        f"forward, padded batches of 16 on 2 threads: {c['bare_cpu_ms_per_row']:.2f} ms CPU per "
        f"row; ratio **{c['ratio_to_bare']:.2f}** (target <= 1.25). By thread: {shares}.",
        *_profile_lines(c.get("profile")),
    ]


def _profile_lines(found: dict | None) -> list[str]:
    """The profile's stages of at least 1% of the samples."""
    if not found:
        return []
    lines = ["", f"py-spy, {found['samples']} samples: share by thread / stage", ""]
    lines += ["| thread / stage | share |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in found["stages"].items() if v >= 0.01]
    return lines


def _ceiling_lines(r: dict) -> list[str]:
    lines = [
        "### Offline ceiling (B=32, max 128 tokens, GLUE inputs)",
        "",
        "| dtype | what | order | sequences/s | tokens/s |",
        "|---|---|---|---|---|",
    ]
    for dtype, c in r["ceiling"].items():
        for order in ("arrival", "sorted"):
            for what in ("bare", "padded", "engine", "bare-2w", "engine-2w"):
                key = f"{what}_{order}"
                if key in c:
                    lines.append(_ceiling_row(dtype, what, order, c[key]))
    return lines


LOAD_SCENARIOS = (  # (row name, section of the results, scenario, label in the plot or None)
    ("bitpatch, single task", "traffic", "single", "single"),
    ("bitpatch, mixed 16 tasks", "traffic", "mixed16", "mixed 16"),
    ("bitpatch, mixed 256 tasks", "traffic", "mixed256", "mixed 256"),
    ("bitpatch, mixed 16 tasks, --forward padded", "designs", "padded", None),
    ("bitpatch, mixed 16 tasks, --workers 1", "designs", "workers1", None),
    ("(b) one model, biases swapped per task group", "designs", "swap", "(b) swap"),
    ("(a) one model copy per task, 16 tasks", "designs", "copies", "(a) copies"),
    ("bitpatch, 1 client, 1 input", "traffic", "one_client", None),
    ("hot swap: no uploads", "hot_swap", "without_uploads", None),
    (f"hot swap: {UPLOADS_PER_S} uploads/s", "hot_swap", "with_uploads", None),
)


def _load_lines(r: dict) -> list[str]:
    lines = [
        f"### Server under load ({r['config']['clients']} closed-loop clients, "
        "1-4 inputs per request)",
        "",
        "| scenario | inputs/s | requests/s | p50 ms | p95 ms | p99 ms | errors "
        "| rows/batch | tasks/batch | fill | forward busy | load generator cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, section, scenario, _ in LOAD_SCENARIOS:
        s = r[section][scenario]
        b = s.get("batches", {})
        batch_cells = " | ".join(
            f"{b[k]:.2f}" if k in b else "-"
            for k in ("rows_per_batch", "tasks_per_batch", "fill", "forward_busy")
        )
        cores = f"{s['client_cores']:.2f}" if "client_cores" in s else "-"
        lines.append(
            f"| {name} | {s['inputs_per_s']:.1f} | {s['requests_per_s']:.1f} | "
            f"{s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{s['errors']} | {batch_cells} | {cores} |"
        )
    return lines


def _memory_lines(r: dict) -> list[str]:
    m = r["memory"]
    lines = ["### Memory and cold start", "", "| registered patches | RSS MB |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in m["rss_mb"].items()]
    copies = r["designs"]["copies"]["rss_mb"]
    stored = ", ".join(
        f"{v:.1f} s ({k.split('_')[2]} patches in the store)"
        for k, v in m.items()
        if k.startswith("cold_start_") and "empty" not in k
    )
    return lines + [
        "",
        f"Design (a) RSS: {copies['1']:.0f} MB with 1 task, {copies['16']:.0f} MB "
        f"with 16. Upload over REST: {1000 * m['upload_s_each']:.1f} ms each.",
        f"Cold start to ready: {m['cold_start_empty_s']:.1f} s (empty store); {stored}.",
        f"Hot swap: {r['hot_swap']['uploads']} uploads, {r['hot_swap']['upload_failures']} failed.",
        f"1-client bare single-row forward: {r['traffic']['one_client_forward_ms']:.1f} ms.",
    ]


def _replay_lines(r: dict) -> list[str]:
    replay, server = r["replay"], r["traffic"]["mixed16"]
    lines = [
        f"### The server's own batches replayed offline ({replay['batches']} forwards, "
        f"{replay['rows']} rows, fill {replay['fill']:.2f}; mixed 16 tasks)",
        "",
        "| what | sequences/s | ms per forward (each worker) | server / this |",
        "|---|---|---|---|",
    ]
    for key, name in REPLAY_NAMES.items():
        cell = replay[key]
        lines.append(
            f"| {name} | {cell['sequences_per_s']:.0f} | {cell['ms_per_forward']:.1f} | "
            f"{server['inputs_per_s'] / cell['sequences_per_s']:.3f} |"
        )
    lines.append(
        f"| the server itself (mixed 16) | {server['inputs_per_s']:.0f} | "
        f"{replay['server_ms_per_forward']:.1f} | 1.000 |"
    )
    return lines


def plot(r: dict, out: Path) -> None:
    """Bar chart: throughput per scenario and p99 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [row for row in LOAD_SCENARIOS if row[3]]  # the 64-client throughput scenarios
    names = [label for _, _, _, label in plotted]
    data = [r[section][scenario] for _, section, scenario, _ in plotted]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["#4477aa" if section == "traffic" else "#cc6677" for _, section, _, _ in plotted]
    left.bar(names, [d["inputs_per_s"] for d in data], color=colors)
    left.set_ylabel("inputs / s")
    left.set_title("throughput, 64 clients")
    right.bar(names, [d["p99_ms"] for d in data], color=colors)
    right.set_ylabel("p99 latency (ms)")
    right.set_title("p99 latency")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
