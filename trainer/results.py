"""Regenerate docs/RESULTS.md's table from saved run summaries (`bitpatch train --metrics-out`).

python -m bitpatch.trainer.results docs/results > docs/results-table.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from .metrics import MAIN_METRIC

TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
SMALL_TASKS = TASKS[:4]
PROTOCOL_EPOCHS = {"sst2": 1}  # every other task: 3
METHODS = [
    ("full", "all", "Full-FT"),
    ("bitfit", "all", "BitFit"),
    ("bitfit", "bq+bm2", "BitFit bq+bm2"),
    ("frozen", "all", "Frozen (head only)"),
]


def protocol_epochs(task: str) -> int:
    """The table's epoch budget for `task` (scripts/results.sh asks here too)."""
    return PROTOCOL_EPOCHS.get(task, 3)


def budget(run: dict) -> int | None:
    """None for the table's protocol (3 epochs, 1 for SST-2), else the run's epoch count."""
    epochs = int(run.get("epochs", protocol_epochs(run["task"])))
    return None if epochs == protocol_epochs(run["task"]) else epochs


def load_runs(folder: Path) -> dict[tuple, list[dict]]:
    """(task, method, bias_terms, budget) -> run summaries."""
    runs = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("kind", "classification") not in ("classification", "regression"):
            continue  # the table is GLUE's per-text tasks (embedding runs have their own)
        if float(run.get("train_fraction", 1.0)) < 1:
            continue  # the data-amount study has its own table (trainer/data_amount.py)
        runs[(run["task"], run["method"], run["bias_terms"], budget(run))].append(run)
    return runs


def rows(runs) -> list[tuple[str, str, int | None, str]]:
    """(method, bias_terms, budget, row name): the protocol rows, then longer-budget ones."""
    out = [(method, terms, None, name) for method, terms, name in METHODS]
    names = {(method, terms): name for method, terms, name in METHODS}
    order = {(method, terms): i for i, (method, terms, _) in enumerate(METHODS)}
    extra = sorted(
        {(m, t, b) for (_, m, t, b) in runs if b is not None and (m, t) in names},
        key=lambda key: (key[2], order[key[:2]]),
    )
    return out + [(m, t, b, f"{names[(m, t)]}, {b} epochs") for m, t, b in extra]


def cell(runs: list[dict], task: str) -> tuple[str, float | None]:
    """'mean ± std (n)' of the task's headline metric."""
    if not runs:
        return "-", None
    metric = MAIN_METRIC.get(task, "accuracy")
    values = [r["metrics"][metric] for r in runs]
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})", mean


def table(runs) -> str:
    """Markdown: rows = methods, columns = tasks, the averages (all five; the four small
    tasks) and % trainable."""
    head = "| method | " + " | ".join(TASKS) + " | average | average w/o sst2 | % params |"
    lines = [head, "|" + "---|" * (len(TASKS) + 4)]
    for method, terms, epochs, name in rows(runs):
        found = [runs.get((task, method, terms, epochs), []) for task in TASKS]
        cells = [cell(runs_of_task, task) for runs_of_task, task in zip(found, TASKS, strict=True)]
        means = [mean for _, mean in cells]
        pct = next((f"{r[0]['trainable_percent']:.3f}" for r in found if r), "-")
        averages = f"{_average(means)} | {_average(means[: len(SMALL_TASKS)])}"
        lines.append(f"| {name} | " + " | ".join(t for t, _ in cells) + f" | {averages} | {pct} |")
    return "\n".join(lines)


def _average(means: list[float | None]) -> str:
    return f"{statistics.mean(means):.1f}" if all(m is not None for m in means) else "-"


def on_gpu(run: dict) -> bool:
    """Whether a run trained on a GPU (runs saved before `hardware` was recorded were CPU)."""
    return run.get("hardware", "cpu").startswith("cuda")


def minutes_table(runs, gpu: bool = False) -> str:
    """Markdown: mean wall minutes per run for each task and method (undisturbed runs only),
    of the CPU runs or, with `gpu`, of the GPU runs."""
    lines = ["| method | " + " | ".join(TASKS) + " |", "|" + "---|" * (len(TASKS) + 1)]
    for method, terms, epochs, name in rows(runs):
        cells = []
        for task in TASKS:
            found = runs.get((task, method, terms, epochs), [])
            valid = [
                r["seconds"] / 60
                for r in found
                if r.get("seconds_valid", True) and on_gpu(r) == gpu
            ]
            cells.append(f"{statistics.mean(valid):.1f} (n={len(valid)})" if valid else "-")
        if any(c != "-" for c in cells):  # rows with no timed run on this hardware stay out
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def commands(runs) -> str:
    """Every run's exact command."""
    out = []
    for key in sorted(runs, key=str):
        out += [f"    {r['command']}" for r in runs[key]]
    return "\n".join(out)


def main() -> None:
    """Print the table and the commands for a folder of run summaries."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    runs = load_runs(folder)
    gpus = sorted({r["hardware"] for found in runs.values() for r in found if on_gpu(r)})
    gpu_minutes = ""
    if gpus:
        gpu_minutes = f"\n\nWall minutes per run on a GPU ({', '.join(gpus)}):\n\n"
        gpu_minutes += minutes_table(runs, gpu=True)
    sys.stdout.write(
        table(runs)
        + "\n\nWall minutes per run on the CPU:\n\n"
        + minutes_table(runs)
        + gpu_minutes
        + "\n\nCommands:\n\n"
        + commands(runs)
        + "\n"
    )


if __name__ == "__main__":
    main()
