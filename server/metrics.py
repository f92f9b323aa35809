"""Prometheus metrics (prefix bitpatch_), one registry per app."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .task_stats import TaskStats
from .traffic import Traffic

LATENCY_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1,
    2,
    5,
    10,
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)
GC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


@dataclass
class RequestCount:
    """A predict-like request being counted: its API, its task once known, when it began."""

    api: str
    task: str | None = None
    started: float = field(default_factory=time.perf_counter)
    token: str | None = None  # the name of the token that sent it (None: no token)

    def label(self, answered: bool, known: Callable[[str], bool]) -> str:
        """The task label: a name no task has shares `_unknown`, so the label set stays bounded
        (pseudo-tasks such as `_fanout` keep theirs)."""
        task = self.task or "_unknown"
        if answered or task.startswith("_") or known(task):
            return task
        return "_unknown"


class Metrics:
    """Every metric the server exports."""

    def __init__(self, labelled_tasks: int = 100):
        self.registry = CollectorRegistry()
        self.traffic = Traffic()  # the console's last 15 minutes (server/traffic.py)
        # every task's counts; own /metrics series for the busiest (server/task_stats.py)
        self.tasks_seen = TaskStats(labelled_tasks, LATENCY_BUCKETS)
        r = self.registry
        r.register(self.tasks_seen)
        self.batch_rows = Histogram(
            "bitpatch_batch_rows", "Rows per forward", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_tasks = Histogram(
            "bitpatch_batch_tasks", "Distinct tasks per forward", buckets=ROW_BUCKETS, registry=r
        )
        self.rows_by_kind = Counter(
            "bitpatch_rows",
            "Rows computed, by task kind",
            ["kind"],
            registry=r,
        )
        self.batch_fill = Histogram(
            "bitpatch_batch_fill",
            "Real tokens / padded tokens per forward (1.0 = no padding waste)",
            buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.forward = Histogram(
            "bitpatch_forward_seconds",
            "Time of one batched forward",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lone_forwards = Counter(
            "bitpatch_lone_forwards",
            "Forwards that ran alone (nothing queued, the other workers idle) on every "
            "worker's threads",
            registry=r,
        )
        self.express_forwards = Counter(
            "bitpatch_express_forwards",
            "Forwards of light flows' rows run beside the workers' full forwards",
            registry=r,
        )
        self.queue_rows = Gauge("bitpatch_queue_rows", "Rows waiting for a forward", registry=r)
        self.token_requests = Counter(
            "bitpatch_token_requests",
            "Predict-like requests by the name of the token that sent them (never the token) "
            "and status (429: over its quota)",
            ["token", "status"],
            registry=r,
        )
        self.tasks = Gauge("bitpatch_registered_tasks", "Tasks with an active version", registry=r)
        self.resident = Gauge(
            "bitpatch_resident_versions",
            "Task versions decoded in memory (the others load on their first request)",
            registry=r,
        )
        self.rejections = Counter(
            "bitpatch_rejections", "Rejected uploads and requests by reason", ["reason"], registry=r
        )
        self.rollout_figure = Gauge(
            "bitpatch_rollout_figure",
            "This replica's figures of each version of a task with a rollout: served, "
            "shadow_rows, agreement (percent), evaluated, value (the labelled metric)",
            ["task", "version", "figure"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "bitpatch_shadow_rows_dropped",
            "Shadow rows not run, by reason (queue_full, not_resident, failed)",
            ["reason"],
            registry=r,
        )
        self.gc_pause = Histogram(
            "bitpatch_gc_pause_seconds",
            "Python garbage collections by generation (each holds the interpreter lock, so "
            "forwards and the event loop wait)",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        self.sync_lag = Gauge(
            "bitpatch_sync_lag_seconds",
            "Seconds since this process last applied the store's changes successfully",
            registry=r,
        )
        self.sync_last_success = Gauge(
            "bitpatch_sync_last_success_timestamp_seconds",
            "Unix time of the last successful sync with the store",
            registry=r,
        )
        self.sync_errors = Counter(
            "bitpatch_sync_errors", "Sync passes that failed (store unreachable, ...)", registry=r
        )
        self.store_skipped = Gauge(
            "bitpatch_store_skipped_objects",
            "Stored versions refused so far (corrupt, foreign backbone, half-written)",
            registry=r,
        )

    def count_request(
        self, count: RequestCount, status: int | str, known: Callable[[str], bool]
    ) -> None:
        """One predict-like request answered: its HTTP status (a gRPC one's code name), and
        its latency when it succeeded."""
        answered = status in (200, "OK")
        task = count.label(answered, known)
        seconds = time.perf_counter() - count.started if answered else None
        self.tasks_seen.request(task, str(status), count.api, seconds)
        if count.token is not None:
            self.token_requests.labels(count.token, str(status)).inc()
        self.traffic.request(task, answered, seconds)

    def task_event(self, name: str, task: str) -> None:
        """One upload, activation or aborted rollout of a task (see task_stats.EVENTS)."""
        self.tasks_seen.event(name, task)


def watch_gc(pauses: Histogram) -> Callable[[], None]:
    """Time every garbage collection into `pauses`; returns the function that stops it."""
    by_generation = [pauses.labels(str(g)) for g in range(3)]
    started = [0.0]

    def on_collection(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_collection)
    return lambda: gc.callbacks.remove(on_collection)
