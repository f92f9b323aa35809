"""Watching rollouts in this replica: figures of served, shadowed and evaluated rows per
version, the answer of `GET /tasks/{task}/rollout`, and the guard that ends a rollout whose
candidate falls behind (the end is written to the store, so every replica stops routing)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from ..errors import InvalidRequest
from ..metrics import Metrics
from .figures import Figures, VersionFigures
from .registry import Lease, Registry
from .rollouts import Rollout
from .scoring import Scorer, scorer_of

log = logging.getLogger(__name__)


class RolloutWatch:
    """Figures and guards of every task's rollout (event-loop only)."""

    def __init__(self, registry: Registry, metrics: Metrics):
        self.registry, self.metrics = registry, metrics
        self.figures = Figures(metrics)
        self._ending: set[str] = set()  # rollouts whose guard fired, being ended
        self._endings: set[asyncio.Task] = set()

    def served(self, task: str, version: int) -> None:
        """One request of the task answered by `version`."""
        self.figures.served(task, self.registry.current_rollout(task), version)

    async def compare(
        self, served: Lease, shadow: Lease, done: asyncio.Future, shadowed: asyncio.Future
    ) -> None:
        """Once both are computed: the shadow rows against the rows that served."""
        try:
            answered, shadowed_rows = await asyncio.gather(done, shadowed)
        except Exception as err:  # the request's own failure is its caller's to see
            self.metrics.shadow_dropped.labels("failed").inc()
            log.warning("event=shadow_failed task=%s error=%s", shadow.task, err)
            return
        rollout = self.registry.current_rollout(shadow.task)
        if rollout is None:
            return
        scorer = scorer_of(served.head.kind)
        compared = Counter()
        for a, b in zip(answered, shadowed_rows, strict=True):
            compared.update(scorer.compare(a, b))
        self.figures.shadowed(shadow.task, rollout, shadow.version, len(answered), compared)
        self.check_guard(shadow.task, rollout, scorer)

    def evaluated(self, task: str, outcomes: list, labels: list) -> dict:
        """Score each version's predictions against the labels, add them to the running
        figures and answer this call's figures per version."""
        rollout = self.registry.current_rollout(task)
        scored = {}
        for outcome in outcomes:
            scorer = scorer_of(outcome.head.kind)
            counts = Counter()
            for i, (prediction, label) in enumerate(zip(outcome.predictions, labels, strict=True)):
                where = f"labels[{i}]"
                wanted = scorer.check_label(outcome.head.labels, label, where)
                counts.update(scorer.score(prediction, wanted, where))
            scored[outcome.version] = (scorer, counts)
        answer = {}
        for version, (scorer, counts) in scored.items():
            self.figures.evaluated(task, rollout, version, len(labels), counts)
            value = scorer.value(counts)
            answer[str(version)] = {"rows": len(labels), "metric": scorer.metric, "value": value}
            if rollout is not None and rollout.live:
                figures = self.figures.of(task, rollout).of(version)
                self.figures.publish_value(
                    task, version, scorer.value(figures.scored), figures.evaluated
                )
        if rollout is not None and scored:
            self.check_guard(task, rollout, next(iter(scored.values()))[0])
        return {"figures": answer}

    def check_guard(self, task: str, rollout: Rollout, scorer: Scorer) -> None:
        """End the rollout (in the background) when its guard's condition is met."""
        if rollout.guard is None or not rollout.live or rollout.id in self._ending:
            return
        reason = self.guard_reason(task, rollout, scorer)
        if reason is None:
            return
        self._ending.add(rollout.id)
        self.metrics.task_event("rollouts_aborted", task)
        log.warning("event=rollout_aborted task=%s rollout=%s reason=%r", task, rollout.id, reason)
        ending = asyncio.ensure_future(self._end(task, rollout.id, reason))
        self._endings.add(ending)
        ending.add_done_callback(self._endings.discard)

    async def _end(self, task: str, rollout_id: str, reason: str) -> None:
        try:
            await asyncio.to_thread(self.registry.end_rollout, task, reason, rollout_id)
        except Exception:
            log.exception("event=rollout_end_failed task=%s rollout=%s", task, rollout_id)
            self._ending.discard(rollout_id)  # the next figures try again

    def guard_reason(self, task: str, rollout: Rollout, scorer: Scorer) -> str | None:
        """Why the guard ends the rollout now, or None."""
        guard, figures = rollout.guard, self.figures.of(task, rollout)
        if guard.metric == "agreement":
            version = rollout.shadow.version
            shadow = figures.of(version)
            agreement = shadow.agreement()
            if shadow.shadow_rows < guard.min_rows or agreement is None:
                return None
            if agreement >= 100 - guard.max_drop:
                return None
            return (
                f"guard: shadow version {version} agreed with the serving version on "
                f"{agreement:.2f}% of {shadow.shadow_rows} rows, below {100 - guard.max_drop:g}%"
            )
        return self.metric_reason(task, rollout, scorer, figures.versions)

    def metric_reason(
        self, task: str, rollout: Rollout, scorer: Scorer, versions: dict[int, VersionFigures]
    ) -> str | None:
        """The accuracy guard: the candidate's labelled metric against the active version's."""
        guard, version = rollout.guard, rollout.candidate.version
        active = self.registry.active_version(task)
        candidate, baseline = versions.get(version), versions.get(active)
        if candidate is None or baseline is None or candidate.evaluated < guard.min_rows:
            return None
        mine, theirs = scorer.value(candidate.scored), scorer.value(baseline.scored)
        if mine is None or theirs is None:
            return None
        drop = theirs - mine if scorer.higher_is_better else mine - theirs
        if drop <= guard.max_drop:
            return None
        return (
            f"guard: version {version} has {scorer.metric} {mine:.2f} over "
            f"{candidate.evaluated} evaluated rows, {drop:.2f} worse than active version "
            f"{active} ({theirs:.2f}); max_drop is {guard.max_drop:g}"
        )

    def check_guard_fits(self, task: str, rollout: Rollout) -> None:
        """InvalidRequest when the guard's metric means nothing for the task's kind."""
        if rollout.guard is None or rollout.guard.metric != "agreement":
            return
        kind = self.registry.version(task, self.registry.active_version(task)).meta.get("kind")
        if not scorer_of(kind).agrees:
            raise InvalidRequest(
                f"task {task!r} is a {kind} task: its shadow rows are compared by their mean "
                'difference, not an agreement percent; guard on "accuracy" (mean absolute '
                "error, from POST /tasks/{task}/evaluate) instead"
            )

    def answer(self, task: str) -> dict:
        """`GET /tasks/{task}/rollout`: the rollout and this replica's figures."""
        rollout = self.registry.rollout(task)
        active = self.registry.active_version(task)
        kind = self.registry.version(task, active).meta.get("kind", "classification")
        scorer = scorer_of(kind)
        figures = self.figures.of(task, rollout)
        live = rollout if rollout is not None and rollout.live else None
        shown = [active, *(v for v in sorted(figures.versions) if v != active)]
        if live is not None:
            shown += [v for v in sorted(live.versions()) if v not in shown]
        return {
            "task": task,
            "active": active,
            "canary": live.canary.to_json() if live and live.canary else None,
            "shadow": live.shadow.to_json() if live and live.shadow else None,
            "guard": live.guard.to_json() if live and live.guard else None,
            "ended": rollout.ended.to_json() if rollout and rollout.ended else None,
            "scope": "replica",
            "figures": {str(v): figures.of(v).answer(scorer) for v in shown},
        }
