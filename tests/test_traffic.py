"""The console's live traffic recorder: slots, percentiles, busiest tasks, bounded memory."""

from __future__ import annotations

from bitpatch.server.traffic import SAMPLES_PER_SLOT, SLOT_SECONDS, WINDOW_SLOTS, Traffic


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_summary_percentiles_and_errors_of_the_last_minute():
    clock = Clock()
    traffic = Traffic(clock)
    for ms in range(1, 101):  # 1 .. 100 ms
        traffic.request("a", True, ms / 1000)
    traffic.request("a", False, None)
    snap = traffic.snapshot(queued_rows=3)
    summary = snap["summary"]
    assert summary["requests"] == 101 and summary["errors"] == 1
    assert summary["p50_ms"] == 51.0 and summary["p95_ms"] == 96.0
    assert summary["rps"] == round(101 / 60, 3)
    assert snap["queue_rows"] == 3


def test_series_covers_fifteen_minutes_in_five_second_slots():
    clock = Clock()
    traffic = Traffic(clock)
    traffic.request("a", True, 0.01)
    clock.now += 3 * SLOT_SECONDS
    traffic.request("a", True, 0.02)
    traffic.request("a", True, 0.02)
    series = traffic.snapshot(0)["series"]
    assert len(series) == WINDOW_SLOTS
    assert [p["requests"] for p in series[-4:]] == [1, 0, 0, 2]
    assert series[-1]["t"] - series[0]["t"] == (WINDOW_SLOTS - 1) * SLOT_SECONDS
    clock.now += WINDOW_SLOTS * SLOT_SECONDS  # all of it has aged out
    assert sum(p["requests"] for p in traffic.snapshot(0)["series"]) == 0


def test_forwards_give_rows_and_tasks_per_forward_and_the_deepest_queue():
    traffic = Traffic(Clock())
    traffic.forward(rows=32, tasks=4, queued_rows=10)
    traffic.forward(rows=16, tasks=2, queued_rows=40)
    summary = traffic.snapshot(0)["summary"]
    assert summary["forwards"] == 2
    assert summary["rows_per_forward"] == 24 and summary["tasks_per_forward"] == 3
    assert summary["queue_rows_max"] == 40


def test_busiest_tasks_first_and_only_the_last_minute():
    clock = Clock()
    traffic = Traffic(clock)
    traffic.request("old", True, 0.01)
    clock.now += 120
    for task, n in (("b", 5), ("a", 9), ("c", 1)):
        for _ in range(n):
            traffic.request(task, True, 0.005)
    tasks = traffic.snapshot(0, top=2)["tasks"]
    assert [t["task"] for t in tasks] == ["a", "b"]
    assert tasks[0]["requests"] == 9 and tasks[0]["p50_ms"] == 5.0
    assert len(tasks[0]["requests_series"]) == WINDOW_SLOTS
    assert tasks[0]["requests_series"][-1] == 9 and sum(tasks[0]["requests_series"]) == 9


def test_latency_samples_stay_bounded_under_heavy_traffic():
    traffic = Traffic(Clock())
    for i in range(20 * SAMPLES_PER_SLOT):
        traffic.request("a", True, (i % 100) / 1000)
    slot = traffic._slots[-1]
    assert slot.all.requests == 20 * SAMPLES_PER_SLOT
    assert len(slot.all.samples) == SAMPLES_PER_SLOT
    assert 40 <= traffic.snapshot(0)["summary"]["p50_ms"] <= 60  # a fair sample
