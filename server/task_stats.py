"""Per-task counts whatever the number of tasks: every task's requests, errors, rows and latency
for `GET /stats/tasks`, and in /metrics own series for at most `labelled` tasks (the busiest by
recent requests), the rest summed under task="_other".

Every exported series only ever grows, so Prometheus' rate() stays right as tasks move in and
out of the labelled set: a labelled task's series counts what happened while it was labelled
(and carries on from there if it is labelled again), `_other` what happened to tasks while they
were not. Summed over tasks, the series equal the true totals.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

OTHER = "_other"
RANK_SECONDS = 60.0  # the labelled set is re-ranked by the requests of each such window
EVENTS = {
    "uploads": "Accepted patch uploads (new versions)",
    "activations": "Version activations",
    "rollouts_aborted": "Rollouts ended by their guard (the candidate fell behind the active "
    "version)",
}
SORTS = ("name", "requests", "errors", "rows", "p99_ms")


class Tally:
    """Counts of one task (or of the tasks summed under one label)."""

    __slots__ = ("requests", "latency", "rows", "events")

    def __init__(self):
        self.requests: dict[tuple[str, str], int] = {}  # (status, api) -> count
        self.latency: dict[str, list] = {}  # api -> [bucket counts..., +Inf count, sum]
        self.rows = 0
        self.events: dict[str, int] = {}

    def request(self, status: str, api: str, seconds: float | None, bounds: tuple) -> None:
        """One answered request (seconds: its latency when it succeeded)."""
        key = (status, api)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            counts = self.latency.get(api)
            if counts is None:
                counts = self.latency[api] = [0] * (len(bounds) + 1) + [0.0]
            counts[bisect.bisect_left(bounds, seconds)] += 1
            counts[-1] += seconds

    def total(self, ok: Callable[[str], bool] | None = None) -> int:
        """Requests (only those whose status passes `ok`, when given)."""
        return sum(n for (status, _), n in self.requests.items() if ok is None or ok(status))


def answered(status: str) -> bool:
    """Whether a status string is a success (HTTP 200 or gRPC OK)."""
    return status in ("200", "OK")


class TaskStats:
    """The recorder (thread-safe): the edge reports requests, the batcher rows, the registry
    routes events; /metrics collects it and `page` answers GET /stats/tasks."""

    def __init__(self, labelled: int, bounds: tuple, clock: Callable[[], float] = time.monotonic):
        self.labelled, self.bounds, self._clock = labelled, tuple(bounds), clock
        self._lock = threading.Lock()
        self._full: dict[str, Tally] = {}  # every task, everything
        self._own: dict[str, Tally] = {}  # exported per task: counted while labelled
        self._other = Tally()  # exported under _other: counted while not labelled
        self._chosen: set[str] = set()  # tasks with their own label now
        self._window: dict[str, int] = {}  # requests per task since the last ranking
        self._ranked_at = clock()

    # ---- recording -------------------------------------------------------------------------
    def request(self, task: str, status: str, api: str, seconds: float | None) -> None:
        """One predict-like request answered."""
        with self._lock:
            self._rank_if_due()
            self._window[task] = self._window.get(task, 0) + 1
            for tally in self._tallies(task):
                tally.request(status, api, seconds, self.bounds)

    def rows(self, task_rows: dict[str, int]) -> None:
        """Rows computed per task in one forward."""
        with self._lock:
            for task, count in task_rows.items():
                for tally in self._tallies(task):
                    tally.rows += count

    def event(self, name: str, task: str) -> None:
        """One upload, activation or aborted rollout of a task."""
        with self._lock:
            for tally in self._tallies(task):
                tally.events[name] = tally.events.get(name, 0) + 1

    def _tallies(self, task: str) -> tuple[Tally, Tally]:
        """The task's full tally and the exported one its counts go to now (caller locks)."""
        full = self._full.get(task)
        if full is None:
            full = self._full[task] = Tally()
        if task not in self._chosen and (task.startswith("_") or len(self._chosen) < self.labelled):
            self._chosen.add(task)  # room left (pseudo-tasks always): labelled at once
        if task in self._chosen:
            own = self._own.get(task)
            if own is None:
                own = self._own[task] = Tally()
            return full, own
        return full, self._other

    def _rank_if_due(self) -> None:
        """Every RANK_SECONDS: the busiest tasks of the window keep or get their own label;
        room left goes to the tasks labelled before (caller locks)."""
        now = self._clock()
        if now - self._ranked_at < RANK_SECONDS:
            return
        busy = sorted(
            (t for t in self._window if not t.startswith("_")),
            key=lambda t: (-self._window[t], t),
        )
        chosen = set(busy[: self.labelled])
        for task in sorted(self._chosen):
            if len(chosen) >= self.labelled and not task.startswith("_"):
                continue
            chosen.add(task)
        self._chosen, self._window, self._ranked_at = chosen, {}, now

    def forget(self, task: str) -> None:
        """Drop a deleted task's full counts (its exported series stay until re-ranked)."""
        with self._lock:
            self._full.pop(task, None)

    # ---- /metrics ----------------------------------------------------------------------------
    def collect(self) -> Iterable:
        """The task-labelled metric families: the labelled tasks' own series and _other."""
        with self._lock:
            exported = [(t, self._own[t]) for t in sorted(self._chosen) if t in self._own]
            exported.append((OTHER, self._other))
            families = self._families(exported)
        yield from families

    def _families(self, exported: list[tuple[str, Tally]]) -> list:
        requests = CounterMetricFamily(
            "bitpatch_requests",
            "Predict requests by task, status and API (native, v2, grpc, openai); tasks beyond "
            '--metrics-tasks are summed under task="_other"',
            labels=["task", "status", "api"],
        )
        latency = HistogramMetricFamily(
            "bitpatch_request_seconds",
            "Predict latency by task and API (tasks beyond --metrics-tasks under _other)",
            labels=["task", "api"],
        )
        rows = CounterMetricFamily("bitpatch_task_rows", "Rows computed by task", labels=["task"])
        events = {
            name: CounterMetricFamily(f"bitpatch_{name}", doc, labels=["task"])
            for name, doc in EVENTS.items()
        }
        for task, tally in exported:
            for (status, api), count in sorted(tally.requests.items()):
                requests.add_metric([task, status, api], count)
            for api, counts in sorted(tally.latency.items()):
                latency.add_metric([task, api], self._buckets(counts), counts[-1])
            if tally.rows:
                rows.add_metric([task], tally.rows)
            for name, count in tally.events.items():
                events[name].add_metric([task], count)
        return [requests, latency, rows, *events.values()]

    def _buckets(self, counts: list) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs of one latency tally."""
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], counts[:-1], strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out

    # ---- GET /stats/tasks --------------------------------------------------------------------
    def page(self, limit: int, after: str | None, sort: str, keep=None) -> dict:
        """Every task's counts (those `keep` passes), `limit` at a time in `sort` order;
        `next` is the cursor of the page after (None on the last)."""
        keep = keep or (lambda task: True)
        with self._lock:  # only copied under the lock: request counting goes on meanwhile
            tallies = [(t, tally) for t, tally in self._full.items() if keep(t)]
            labelled = sorted(t for t in self._chosen if not t.startswith("_") and keep(t))
        entries = [self._figures(t, tally) for t, tally in tallies]
        key = sort_key(sort)
        entries.sort(key=key)
        if after:
            start = bisect.bisect_right([cursor_of(key(e)) for e in entries], after)
            entries_after = entries[start:]
        else:
            entries_after = entries
        page = entries_after[:limit]
        more = len(entries_after) > limit
        return {
            "total": len(entries),
            "sort": sort,
            "labelled": labelled,
            "tasks": page,
            "next": cursor_of(key(page[-1])) if more else None,
        }

    def _figures(self, task: str, tally: Tally) -> dict:
        merged = merge_latency(tally.latency.values(), len(self.bounds))
        return {
            "task": task,
            "requests": tally.total(),
            "errors": tally.total(lambda s: not answered(s)),
            "rows": tally.rows,
            "by_status": {s: n for s, n in sorted(count_by_status(tally).items())},
            **{f"p{q}_ms": percentile_ms(merged, self.bounds, q / 100) for q in (50, 95, 99)},
            **{name: tally.events.get(name, 0) for name in EVENTS},
        }


def count_by_status(tally: Tally) -> dict[str, int]:
    """Requests per status, over every API."""
    out: dict[str, int] = {}
    for (status, _), count in tally.requests.items():
        out[status] = out.get(status, 0) + count
    return out


def merge_latency(tallies: Iterable[list], buckets: int) -> list[int]:
    """Bucket counts summed over APIs (the +Inf bucket last)."""
    merged = [0] * (buckets + 1)
    for counts in tallies:
        for i in range(buckets + 1):
            merged[i] += counts[i]
    return merged


def percentile_ms(counts: list[int], bounds: tuple, q: float) -> float | None:
    """The q-quantile in ms, interpolated linearly within its bucket (as Prometheus'
    histogram_quantile does); the top finite bound when it falls in +Inf; None with no data."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(counts):
        if seen + count >= rank and count:
            if i == len(bounds):
                return round(1000 * bounds[-1], 3)
            low = bounds[i - 1] if i else 0.0
            return round(1000 * (low + (bounds[i] - low) * (rank - seen) / count), 3)
        seen += count
    return round(1000 * bounds[-1], 3)


def sort_key(sort: str) -> Callable[[dict], tuple]:
    """The order of a sort: by name, or by a figure (largest first, then by name)."""
    if sort == "name":
        return lambda e: ("", e["task"])
    return lambda e: (f"{1e15 - (e[sort] or 0):020.3f}", e["task"])


def cursor_of(key: tuple) -> str:
    """The opaque cursor of an entry's sort key (strings that order as the keys do)."""
    return f"{key[0]}~{key[1]}" if key[0] else key[1]
