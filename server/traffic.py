"""Live traffic for the console (`GET /stats/traffic`): requests, latency, errors and forward
shapes in 5-second slots over the last 15 minutes, for the server and each task.

Prometheus keeps the long history; this keeps the last minutes in memory so a browser can draw
them without parsing /metrics. Latencies are reservoir-sampled per slot, so memory is bounded
whatever the traffic.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

SLOT_SECONDS = 5
WINDOW_SLOTS = 180  # 15 minutes
SAMPLES_PER_SLOT = 1024  # latencies kept per slot (server) ...
SAMPLES_PER_TASK = 128  # ... and per task and slot
RECENT_SECONDS = 60  # the summary and the busiest tasks cover the last minute


class Tally:
    """Requests, errors and a bounded sample of latencies (seconds)."""

    __slots__ = ("requests", "errors", "samples", "limit")

    def __init__(self, limit: int):
        self.requests, self.errors, self.samples, self.limit = 0, 0, [], limit

    def add(self, ok: bool, seconds: float | None) -> None:
        """One answered request."""
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        if len(self.samples) < self.limit:
            self.samples.append(seconds)
        elif (i := random.randrange(self.requests)) < self.limit:
            self.samples[i] = seconds


class Slot:
    """Everything counted in one 5-second slot."""

    __slots__ = ("start", "all", "tasks", "forwards", "rows", "forward_tasks", "queue_rows")

    def __init__(self, start: float):
        self.start, self.all, self.tasks = start, Tally(SAMPLES_PER_SLOT), {}
        self.forwards = self.rows = self.forward_tasks = self.queue_rows = 0


class Traffic:
    """The recorder: the edge reports answered requests, the batcher its forwards."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._slots: deque[Slot] = deque(maxlen=WINDOW_SLOTS)
        self._lock = threading.Lock()

    def _slot(self) -> Slot:
        start = self._clock() // SLOT_SECONDS * SLOT_SECONDS
        if not self._slots or self._slots[-1].start != start:
            self._slots.append(Slot(start))
        return self._slots[-1]

    def request(self, task: str, ok: bool, seconds: float | None) -> None:
        """One predict-like request answered (seconds: its latency when it succeeded)."""
        with self._lock:
            slot = self._slot()
            slot.all.add(ok, seconds)
            tally = slot.tasks.get(task)
            if tally is None:
                tally = slot.tasks[task] = Tally(SAMPLES_PER_TASK)
            tally.add(ok, seconds)

    def forward(self, rows: int, tasks: int, queued_rows: int) -> None:
        """One forward: its rows, distinct tasks, and the rows still queued behind it."""
        with self._lock:
            slot = self._slot()
            slot.forwards += 1
            slot.rows += rows
            slot.forward_tasks += tasks
            slot.queue_rows = max(slot.queue_rows, queued_rows)

    def snapshot(self, queued_rows: int, top: int = 10, keep=None) -> dict:
        """The series of the last 15 minutes, the last minute's summary, the busiest tasks."""
        now = self._clock()
        with self._lock:
            slots = list(self._slots)
            window = _window(slots, now // SLOT_SECONDS * SLOT_SECONDS)
            series = [_slot_figures(slot) for slot in window]
            recent = [s for s in slots if s.start > now - RECENT_SECONDS]
            summary = _figures([s.all for s in recent], RECENT_SECONDS) | _forward_figures(recent)
            busiest = _busiest(recent, top, keep or (lambda task: True))
            for task in busiest:  # each busy task's requests per slot, for a sparkline
                task["requests_series"] = _task_requests(window, task["task"])
        return {
            "now": now,
            "slot_seconds": SLOT_SECONDS,
            "window_seconds": WINDOW_SLOTS * SLOT_SECONDS,
            "queue_rows": queued_rows,
            "summary": summary,
            "tasks": busiest,
            "series": series,
        }


def _window(slots: list[Slot], current: float) -> list[Slot]:
    """Every slot of the window up to `current`, oldest first (an empty one where none was)."""
    by_start = {s.start: s for s in slots}
    starts = [current - i * SLOT_SECONDS for i in range(WINDOW_SLOTS - 1, -1, -1)]
    return [by_start.get(t) or Slot(t) for t in starts]


def _task_requests(window: list[Slot], task: str) -> list[int]:
    """A task's requests in every slot of the window, oldest first."""
    return [slot.tasks[task].requests if task in slot.tasks else 0 for slot in window]


def _slot_figures(slot: Slot) -> dict:
    return {"t": slot.start} | _figures([slot.all], SLOT_SECONDS) | _forward_figures([slot])


def _figures(tallies: Iterable[Tally], seconds: float) -> dict:
    """Requests per second, errors, p50 and p95 latency (ms) of some tallies."""
    tallies = list(tallies)
    requests = sum(t.requests for t in tallies)
    samples = sorted(x for t in tallies for x in t.samples)
    return {
        "requests": requests,
        "rps": round(requests / seconds, 3),
        "errors": sum(t.errors for t in tallies),
        "p50_ms": _percentile_ms(samples, 0.50),
        "p95_ms": _percentile_ms(samples, 0.95),
    }


def _forward_figures(slots: list[Slot]) -> dict:
    """Forwards, mean rows and mean distinct tasks per forward, the deepest queue seen."""
    forwards = sum(s.forwards for s in slots)
    return {
        "forwards": forwards,
        "rows_per_forward": round(sum(s.rows for s in slots) / forwards, 2) if forwards else None,
        "tasks_per_forward": (
            round(sum(s.forward_tasks for s in slots) / forwards, 2) if forwards else None
        ),
        "queue_rows_max": max((s.queue_rows for s in slots), default=0),
    }


def _busiest(slots: list[Slot], top: int, keep) -> list[dict]:
    """The `top` tasks (of those `keep` passes) with the most requests in these slots, with
    their figures."""
    by_task: dict[str, list[Tally]] = {}
    for slot in slots:
        for task, tally in slot.tasks.items():
            if keep(task):
                by_task.setdefault(task, []).append(tally)
    ranked = sorted(by_task.items(), key=lambda kv: (-sum(t.requests for t in kv[1]), kv[0]))
    return [{"task": task} | _figures(tallies, RECENT_SECONDS) for task, tallies in ranked[:top]]


def _percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    i = min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))
    return round(1000 * sorted_seconds[i], 3)
