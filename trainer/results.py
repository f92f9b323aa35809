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
    head = "| method | " + " | ".join(TASKS) + " | average | % params | min / run |"
    lines = [head, "|" + "---|" * (len(TASKS) + 4)]
    for method, terms, name in METHODS:
        cells, means, minutes, pct = [], [], [], "-"
        for task in TASKS:
            found = runs.get((task, method, terms), [])
            text, mean = cell(found, task)
            cells.append(text)
            means.append(mean)
            minutes += [r["seconds"] / 60 for r in found if r.get("seconds_valid", True)]
            pct = f"{found[0]['trainable_percent']:.3f}" if found else pct
        avg = f"{statistics.mean(means):.1f}" if all(m is not None for m in means) else "-"
        per_run = f"{statistics.mean(minutes):.1f}" if minutes else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} | {pct} | {per_run} |")
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
    sys.stdout.write(table(runs) + "\n\nCommands:\n\n" + commands(runs) + "\n")


if __name__ == "__main__":
    main()
