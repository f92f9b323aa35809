"""Regenerate docs/RESULTS.md's table from saved run summaries (`bitpatch train --metrics-out`).

python -m bitpatch.trainer.results docs/results > docs/results-table.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from .metrics import main_metric

TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
METHODS = [
    ("full", "all", "Full-FT"),
    ("bitfit", "all", "BitFit"),
    ("bitfit", "bq+bm2", "BitFit bq+bm2"),
    ("frozen", "all", "Frozen (head only)"),
]


def load_runs(folder: Path) -> dict[tuple[str, str, str], list[dict]]:
    """(task, method, bias_terms) -> run summaries."""
    runs = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        runs[(run["task"], run["method"], run["bias_terms"])].append(run)
    return runs


def cell(runs: list[dict], task: str) -> tuple[str, float | None]:
    """'mean ± std (n)' of the task's headline metric."""
    if not runs:
        return "-", None
    metric = main_metric(task, "regression" if task == "stsb" else "classification")
    values = [r["metrics"][metric] for r in runs]
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})", mean


def table(runs) -> str:
    """Markdown: rows = methods, columns = tasks, then the average and % trainable."""
    head = "| method | " + " | ".join(TASKS) + " | average | % params |"
    lines = [head, "|" + "---|" * (len(TASKS) + 3)]
    for method, terms, name in METHODS:
        found = [runs.get((task, method, terms), []) for task in TASKS]
        cells = [cell(runs_of_task, task) for runs_of_task, task in zip(found, TASKS, strict=True)]
        means = [mean for _, mean in cells]
        avg = f"{statistics.mean(means):.1f}" if all(m is not None for m in means) else "-"
        pct = next((f"{r[0]['trainable_percent']:.3f}" for r in found if r), "-")
        lines.append(f"| {name} | " + " | ".join(t for t, _ in cells) + f" | {avg} | {pct} |")
    return "\n".join(lines)


def minutes_table(runs) -> str:
    """Markdown: mean wall minutes per run for each task and method (undisturbed runs only)."""
    lines = ["| method | " + " | ".join(TASKS) + " |", "|" + "---|" * (len(TASKS) + 1)]
    for method, terms, name in METHODS:
        cells = []
        for task in TASKS:
            found = runs.get((task, method, terms), [])
            valid = [r["seconds"] / 60 for r in found if r.get("seconds_valid", True)]
            cells.append(f"{statistics.mean(valid):.1f} (n={len(valid)})" if valid else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def commands(runs) -> str:
    """Every run's exact command."""
    out = []
    for key in sorted(runs):
        out += [f"    {r['command']}" for r in runs[key]]
    return "\n".join(out)


def main() -> None:
    """Print the table and the commands for a folder of run summaries."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
    runs = load_runs(folder)
    sys.stdout.write(
        table(runs)
        + "\n\nWall minutes per run:\n\n"
        + minutes_table(runs)
        + "\n\nCommands:\n\n"
        + commands(runs)
        + "\n"
    )


if __name__ == "__main__":
    main()
