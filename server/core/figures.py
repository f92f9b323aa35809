"""This replica's running figures of each task's versions: requests served, shadow rows and
their agreement with the serving version, labelled rows evaluated and their metric. Figures
restart with each new rollout; Prometheus sees those of tasks with a live rollout."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

from ..metrics import Metrics
from .rollouts import Rollout
from .scoring import Scorer

FIGURES = ("served", "shadow_rows", "agreement", "evaluated", "value")


@dataclass
class VersionFigures:
    """One version's running sums."""

    served: int = 0
    shadow_rows: int = 0
    compared: Counter = field(default_factory=Counter)  # scorer.compare sums
    evaluated: int = 0
    scored: Counter = field(default_factory=Counter)  # scorer.score sums

    def agreement(self) -> float | None:
        """Percent agreement with the serving version (None: no shadow rows, or a kind
        compared by difference only)."""
        units = self.compared["units"]
        return 100.0 * self.compared["agree"] / units if units else None

    def answer(self, scorer: Scorer) -> dict:
        """The figures as `GET /tasks/{task}/rollout` answers them."""
        compared = self.compared["compared"]
        return {
            "served": self.served,
            "shadow_rows": self.shadow_rows,
            "agreement": self.agreement(),
            "difference": self.compared["difference"] / compared if compared else None,
            "evaluated": self.evaluated,
            "metric": scorer.metric,
            "value": scorer.value(self.scored) if self.evaluated else None,
        }


@dataclass
class TaskFigures:
    """One task's figures under one rollout (`rollout_id` None: no rollout)."""

    rollout_id: str | None
    versions: dict[int, VersionFigures] = field(default_factory=dict)

    def of(self, version: int) -> VersionFigures:
        """A version's figures (created empty)."""
        found = self.versions.get(version)
        if found is None:
            found = self.versions[version] = VersionFigures()
        return found


class Figures:
    """Every task's figures in this process (event-loop only: no lock)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._tasks: dict[str, TaskFigures] = {}

    def of(self, task: str, rollout: Rollout | None) -> TaskFigures:
        """The task's figures under `rollout`; a different rollout starts them afresh."""
        wanted = rollout.id if rollout is not None else None
        found = self._tasks.get(task)
        if found is None or found.rollout_id != wanted:
            if found is not None:
                self.forget_metrics(task, found)
            found = self._tasks[task] = TaskFigures(wanted)
        return found

    def served(self, task: str, rollout: Rollout | None, version: int) -> None:
        """One request answered by `version`."""
        figures = self.of(task, rollout).of(version)
        figures.served += 1
        if rollout is not None and rollout.live:
            self.metrics.rollout_figure.labels(task, str(version), "served").set(figures.served)

    def shadowed(
        self, task: str, rollout: Rollout, version: int, rows: int, compared: Counter
    ) -> None:
        """`rows` shadow rows of `version` compared with the rows that served."""
        figures = self.of(task, rollout).of(version)
        figures.shadow_rows += rows
        figures.compared.update(compared)
        self.publish(task, version, figures, ("shadow_rows", "agreement"))

    def evaluated(
        self, task: str, rollout: Rollout | None, version: int, rows: int, scored: Counter
    ) -> None:
        """`rows` labelled rows of `version` scored."""
        figures = self.of(task, rollout).of(version)
        figures.evaluated += rows
        figures.scored.update(scored)

    def publish(self, task: str, version: int, figures: VersionFigures, names) -> None:
        """Set the Prometheus gauges of the named figures (agreement only once it exists)."""
        gauge = self.metrics.rollout_figure
        for name in names:
            value = figures.agreement() if name == "agreement" else getattr(figures, name)
            if value is not None:
                gauge.labels(task, str(version), name).set(value)

    def publish_value(self, task: str, version: int, value: float | None, rows: int) -> None:
        """The labelled metric's gauges of one version."""
        gauge = self.metrics.rollout_figure
        gauge.labels(task, str(version), "evaluated").set(rows)
        if value is not None:
            gauge.labels(task, str(version), "value").set(value)

    def forget_metrics(self, task: str, figures: TaskFigures) -> None:
        """Remove a task's gauges (its rollout changed or ended)."""
        gauge = self.metrics.rollout_figure
        for version in figures.versions:
            for name in FIGURES:
                with contextlib.suppress(KeyError):  # never set
                    gauge.remove(task, str(version), name)
