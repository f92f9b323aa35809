"""The data-amount study: BitFit vs full fine-tuning at 10/30/100% of the training data.

python -m bitpatch.trainer.data_amount docs/results --plot docs/data_amount.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from .metrics import MAIN_METRIC

TASKS = ["mrpc", "stsb", "cola"]
METHODS = {"bitfit": "BitFit", "full": "Full-FT"}
FRACTIONS = [0.1, 0.3, 1.0]
EPOCHS = 16  # every fraction trains 16 epochs: fewer steps on less data


def load_cells(folder: Path) -> dict[tuple[str, str, float], list[float]]:
    """(task, method, fraction) -> the headline metric of each seed."""
    cells = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if not _in_study(run):
            continue
        fraction = float(run.get("train_fraction", 1.0))
        metric = run["metrics"][MAIN_METRIC.get(run["task"], "accuracy")]
        cells[(run["task"], run["method"], fraction)].append(metric)
    return cells


def _in_study(run: dict) -> bool:
    """A 16-epoch, all-bias BitFit or full fine-tuning run on one of the study's tasks."""
    return (
        run.get("task") in TASKS
        and run.get("kind", "classification") in ("classification", "regression")
        and run.get("method") in METHODS
        and run.get("bias_terms", "all") == "all"
        and int(run.get("epochs", 0)) == EPOCHS
    )


def summary(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (0 for one seed); None for no seed."""
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(cells) -> str:
    """Markdown: one row per task and method, one column per fraction, mean ± std (n)."""
    head = "| task | method | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |"
    lines = [head, "|" + "---|" * (len(FRACTIONS) + 2)]
    for task in TASKS:
        for method, name in METHODS.items():
            found = [cells.get((task, method, f), []) for f in FRACTIONS]
            lines.append(f"| {task} | {name} | " + " | ".join(map(_cell, found)) + " |")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    stats = summary(values)
    return "-" if stats is None else f"{stats[0]:.1f} ± {stats[1]:.1f} (n={len(values)})"


def missing(cells, seeds: int = 3) -> list[str]:
    """Every (task, method, fraction) with fewer than `seeds` saved seeds."""
    return [
        f"{task} {method} {fraction:.0%}: {len(cells.get((task, method, fraction), []))}/{seeds}"
        for task in TASKS
        for method in METHODS
        for fraction in FRACTIONS
        if len(cells.get((task, method, fraction), [])) < seeds
    ]


def plot(cells, out: Path) -> None:
    """Metric vs fraction, one panel per task, one line per method with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.4))
    for ax, task in zip(axes, TASKS, strict=True):
        for method, name in METHODS.items():
            points = [(f, summary(cells.get((task, method, f), []))) for f in FRACTIONS]
            points = [(f * 100, s) for f, s in points if s is not None]
            if points:
                xs = [x for x, _ in points]
                ax.errorbar(
                    xs,
                    [s[0] for _, s in points],
                    yerr=[s[1] for _, s in points],
                    marker="o",
                    capsize=3,
                    label=name,
                )
        ax.set_xscale("log")
        ax.set_xticks([f * 100 for f in FRACTIONS], [f"{f:.0%}" for f in FRACTIONS])
        ax.set_title(f"{task} ({MAIN_METRIC.get(task, 'accuracy')})")
        ax.set_xlabel("training data")
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda h: len(h[0]))
    if handles:
        axes[0].legend(handles, labels)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    """Print the study's table (and what is missing); optionally write the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder",
        type=Path,
        nargs="?",
        default=Path("docs/results"),
        help="the run summaries (bitpatch train --metrics-out)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="write the plot (PNG) here")
    parser.add_argument(
        "--update",
        type=Path,
        default=None,
        help="also replace the text between the data-amount markers of this file (RESULTS.md)",
    )
    args = parser.parse_args(argv)
    cells = load_cells(args.folder)
    report = table(cells)
    gaps = missing(cells)
    if gaps:
        report += "\n\nCells with fewer than 3 seeds: " + "; ".join(gaps)
    sys.stdout.write(report + "\n")
    if args.plot:
        plot(cells, args.plot)
    if args.update:
        replace_between_markers(args.update, report)


START, END = "<!-- data-amount:start -->", "<!-- data-amount:end -->"


def replace_between_markers(path: Path, text: str) -> None:
    """Put `text` between the data-amount markers of a Markdown file."""
    content = path.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    head, rest = content.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
