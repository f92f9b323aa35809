"""Per-task counts: /metrics keeps at most --metrics-tasks tasks' own series (the rest under
_other), every exported series only grows, and GET /stats/tasks pages through every task."""

from __future__ import annotations

import random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bitpatch.server.metrics import LATENCY_BUCKETS
from bitpatch.server.task_stats import OTHER, RANK_SECONDS, TaskStats, percentile_ms
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exported(stats: TaskStats) -> dict[tuple, float]:
    """Every sample the collector yields: (name, labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in stats.collect()
        for s in family.samples
    }


def requests_by_task(samples: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "bitpatch_requests_total":
            task = dict(labels)["task"]
            out[task] = out.get(task, 0) + value
    return out


def test_series_stay_bounded_grow_only_and_count_every_request_once():
    clock, rng = Clock(), random.Random(0)
    stats = TaskStats(3, LATENCY_BUCKETS, clock)
    sent: dict[str, int] = {}
    last: dict[tuple, float] = {}  # each series' last value, kept while it is not exported
    for minute in range(6):
        busy = [f"t{(minute + i) % 10}" for i in range(3)]  # the busy tasks move every minute
        for _ in range(300):
            task = rng.choice(busy) if rng.random() < 0.8 else f"t{rng.randrange(10)}"
            stats.request(task, "200", "native", rng.uniform(0.001, 0.05))
            sent[task] = sent.get(task, 0) + 1
        samples = exported(stats)
        assert len(set(requests_by_task(samples)) - {OTHER}) <= 3
        grew = 0.0
        for key, value in samples.items():
            assert value >= last.get(key, 0), f"{key} went down"
            if key[0] == "bitpatch_requests_total":
                grew += value - last.get(key, 0)
            last[key] = value
        assert grew == 300  # what rate() sees over the minute: every request, once
        clock.now += RANK_SECONDS
    page = stats.page(100, None, "requests")
    assert {e["task"]: e["requests"] for e in page["tasks"]} == sent
    counts = [e["requests"] for e in page["tasks"]]
    assert counts == sorted(counts, reverse=True)


def test_a_task_alone_keeps_its_own_series_and_pseudo_tasks_always_do():
    stats = TaskStats(1, LATENCY_BUCKETS, Clock())
    stats.request("a", "200", "v2", 0.004)
    stats.request("b", "429", "native", None)
    stats.request("_fanout", "200", "native", 0.01)
    stats.event("uploads", "b")
    stats.rows({"a": 5, "b": 2})
    by_task = requests_by_task(exported(stats))
    assert by_task == {"a": 1, "_fanout": 1, OTHER: 1}
    entry = {e["task"]: e for e in stats.page(10, None, "name")["tasks"]}["b"]
    assert entry["errors"] == 1 and entry["uploads"] == 1 and entry["rows"] == 2
    assert entry["by_status"] == {"429": 1} and entry["p50_ms"] is None


def test_pages_follow_their_cursor_in_every_sort():
    stats = TaskStats(5, LATENCY_BUCKETS, Clock())
    for i in range(23):
        for _ in range(i % 7):
            stats.request(f"task-{i:02d}", "200", "native", 0.01 * (1 + i % 3))
    for sort in ("name", "requests", "p99_ms"):
        seen, after = [], None
        while True:
            page = stats.page(4, after, sort)
            seen += page["tasks"]
            after = page["next"]
            if after is None:
                break
        names = [e["task"] for e in seen]
        assert len(names) == len(set(names)) == page["total"] == 19  # i % 7 == 0: no request
        whole = stats.page(100, None, sort)["tasks"]
        assert names == [e["task"] for e in whole]


def test_percentiles_interpolate_within_the_bucket():
    bounds = (0.01, 0.02, 0.05)
    assert percentile_ms([0, 10, 0, 0], bounds, 0.5) == 15.0
    assert percentile_ms([10, 0, 0, 0], bounds, 0.99) == pytest.approx(9.9)
    assert percentile_ms([0, 0, 0, 3], bounds, 0.5) == 50.0  # beyond the top bound
    assert percentile_ms([0, 0, 0, 0], bounds, 0.5) is None


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    model = make_model("bert")[0]
    store = tmp_path_factory.mktemp("task-stats") / "store"
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--metrics-tasks", "2") as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            for i in range(6):
                data = random_patch(model, f"t{i}", 2, "cls", seed=i).to_bytes()
                assert http.put(f"/tasks/t{i}/patch", content=data).status_code == 201
        yield srv


def test_a_server_bounds_metrics_and_lists_every_task(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(6):
            for _ in range(i + 1):
                reply = http.post(f"/tasks/t{i}/predict", json={"inputs": ["a b"]})
                assert reply.status_code == 200, reply.text
        text = http.get("/metrics").text
        tasks = {
            s.labels["task"]
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if family.name == "bitpatch_requests"
        }
        assert len(tasks - {OTHER}) == 2 and OTHER in tasks
        uploads = [
            s.labels["task"]
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if family.name == "bitpatch_uploads"
        ]
        assert len(uploads) <= 3  # two tasks of their own and _other
        first = http.get("/stats/tasks", params={"limit": 4, "sort": "requests"}).json()
        assert [e["task"] for e in first["tasks"]] == ["t5", "t4", "t3", "t2"]
        assert first["total"] == 6 and first["next"]
        rest = http.get("/stats/tasks", params={"limit": 4, "sort": "requests",
                                                "after": first["next"]}).json()  # fmt: skip
        assert [e["task"] for e in rest["tasks"]] == ["t1", "t0"] and rest["next"] is None
        assert rest["tasks"][0]["requests"] == 2 and rest["tasks"][0]["rows"] == 2
        bad = http.get("/stats/tasks", params={"sort": "speed"})
        assert bad.status_code == 422 and "sort" in bad.text
