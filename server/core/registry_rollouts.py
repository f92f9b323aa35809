"""The registry's rollouts: reading a task's rollout, routing a request by it, and writing it
(the rollout is kept in the task's pointer in the store; see server/core/rollouts.py).

A mixin of `Registry`: these methods share its maps (`_active`, `_versions`, `_rollouts`) and
its two locks, and take the same care (`_writes` around store I/O, `_lock` for the maps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import RolloutConflict, VersionActive
from .rollouts import Rollout

if TYPE_CHECKING:
    from .registry import VersionInfo

log = logging.getLogger(__name__)


class RegistryRollouts:
    """Rollout reads, routing and writes of the registry."""

    _rollouts: dict[str, Rollout]  # as the store holds them (live or ended)

    def rollout(self, task: str) -> Rollout | None:
        """The task's rollout as the store holds it (live or ended), or None."""
        self._require_task(task)
        return self._rollouts.get(task)

    def current_rollout(self, task: str) -> Rollout | None:
        """The task's rollout, unchecked (the request path's read)."""
        return self._rollouts.get(task)

    def compared_versions(self, task: str) -> list[int]:
        """The active version, then the live rollout's canary and shadow."""
        active = self.active_version(task)
        rollout = self._rollouts.get(task)
        if rollout is None or not rollout.live:
            return [active]
        return [active, *(s.version for s in (rollout.canary, rollout.shadow) if s is not None)]

    def route(self, task: str, key: Callable[[], str] | None) -> tuple[int | None, int | None]:
        """For a request that pins no version: the version that answers it (the active one,
        or the canary) and the version that shadows it (None: none); `key` is asked only while
        the task has a live rollout."""
        rollout = self._rollouts.get(task)
        active = self._active.get(task)
        if rollout is None or not rollout.live or active is None or key is None:
            return active, None
        return rollout.route(task, key(), active)

    def set_rollout(self, task: str, rollout: Rollout) -> Rollout:
        """Store the task's rollout (replacing any); its versions are stored and not active."""
        with self._writes:
            self._current(task)
            for split in (rollout.canary, rollout.shadow):
                if split is not None:
                    self._check_candidate(task, split.version)
            self.store.set_rollout(task, rollout.to_json())
            with self._lock:
                self._rollouts[task] = rollout
        log.info("event=rollout_set task=%s rollout=%s", task, rollout.id)
        return rollout

    def _check_candidate(self, task: str, version: int) -> None:
        self._current(task, version)  # UnknownVersion
        if self._active[task] == version:
            raise VersionActive(
                f"version {version} is the active version of {task!r}; a canary or shadow is "
                f"another stored version (PUT /tasks/{task}/patch?activate=false stores one)"
            )

    def end_rollout(self, task: str, reason: str, rollout_id: str | None = None) -> Rollout | None:
        """End the task's live rollout (only the one with `rollout_id`, when given); the
        rollout as it now stands."""
        with self._writes:
            self._current(task)
            current = self._rollouts.get(task)
            if current is None or not current.live:
                return current
            if rollout_id is not None and current.id != rollout_id:
                return current
            ended = current.end(reason)
            self.store.set_rollout(task, ended.to_json())
            with self._lock:
                self._rollouts[task] = ended
        log.info("event=rollout_ended task=%s rollout=%s reason=%r", task, ended.id, reason)
        return ended

    def promote(self, task: str) -> tuple[VersionInfo, Rollout]:
        """Make the rollout's canary (else its shadow) active and end the rollout, in one
        store write."""
        with self._writes:
            self._current(task)
            current = self._rollouts.get(task)
            if current is None or not current.live:
                raise RolloutConflict(
                    f"task {task!r} has no rollout to promote; PUT /tasks/{task}/rollout "
                    "starts one",
                    code="no_rollout",
                )
            version = current.candidate.version
            info = self._current(task, version)
            ended = current.end(f"promoted version {version}")
            self.make_resident(task, version)
            self.store.set_active(task, version, ended.to_json())
            with self._lock:
                self._switch_active(task, version)
                self._rollouts[task] = ended
        log.info("event=rollout_promoted task=%s version=%d", task, version)
        return info, ended

    def _rollout_versions(self, task: str) -> set[int]:
        rollout = self._rollouts.get(task)
        return rollout.versions() if rollout is not None else set()

    def _apply_rollout(self, task: str, stored: dict | None) -> None:
        """Take the rollout the store holds for a task (an unreadable one is logged, dropped)."""
        if stored is None:
            self._rollouts.pop(task, None)
            return
        try:
            self._rollouts[task] = Rollout.from_json(stored)
        except (KeyError, TypeError, ValueError) as err:
            log.error("event=rollout_unreadable task=%s error=%s", task, err)
            self._rollouts.pop(task, None)
