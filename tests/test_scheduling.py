"""Which rows a forward takes: weighted fair shares among waiting flows (tasks, tenants),
arrival order, deadlines."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from bitpatch.server.core.scheduling import (
    ArrivalQueue,
    FairQueue,
    Flow,
    fair_shares,
    task_flow,
)


def rows_of(task: str, n: int, at: float, deadline=None, length: int = 8, flow=None):
    """n queued rows of one request of `task`, queued at `at` (in `flow`; None: the task's)."""
    job = SimpleNamespace(
        lease=SimpleNamespace(task=task),
        queued_at=at,
        deadline=deadline,
        late=lambda now: deadline is not None and now > deadline,
        flow=flow,
    )
    return [SimpleNamespace(job=job, index=i, length=length) for i in range(n)]


def tasks_taken(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row.job.lease.task] = out.get(row.job.lease.task, 0) + 1
    return out


def test_shares_are_max_min_fair():
    assert fair_shares({"a": 100}, 32) == {"a": 32}  # a task alone gets the whole batch
    assert fair_shares({"a": 100, "b": 100}, 32) == {"a": 16, "b": 16}
    assert fair_shares({"a": 100, "b": 3, "c": 1}, 32) == {"a": 28, "b": 3, "c": 1}
    assert sum(fair_shares({"a": 10, "b": 10, "c": 10}, 32).values()) == 30
    shares = fair_shares({"a": 50, "b": 50, "c": 50}, 32)
    assert sum(shares.values()) == 32 and max(shares.values()) - min(shares.values()) <= 1
    ages = {f"t{i}": float(40 - i) for i in range(40)}  # t39 waited longest
    picked = fair_shares(dict.fromkeys(ages, 1), 32, ages.get)
    assert len(picked) == 32 and "t39" in picked and "t0" not in picked


def test_a_flooding_task_does_not_delay_another_tasks_rows():
    fair, arrival = FairQueue(), ArrivalQueue()
    for queue in (fair, arrival):
        for i in range(10):
            queue.add(rows_of("noisy", 32, at=float(i)))
        queue.add(rows_of("quiet", 2, at=10.0))
    assert tasks_taken(fair.take(32)) == {"noisy": 30, "quiet": 2}
    assert tasks_taken(arrival.take(32)) == {"noisy": 32}  # quiet waits behind 320 rows
    assert len(fair) == 320 - 30 and arrival.rows_before(task_flow("quiet"), 1) == 291
    assert fair.rows_before(task_flow("quiet"), 1) == 2  # its own, one of the noisy task's


def test_rows_past_their_deadline_leave_the_queue():
    for queue in (FairQueue(), ArrivalQueue()):
        queue.add(rows_of("a", 3, at=0.0, deadline=5.0))
        queue.add(rows_of("b", 2, at=1.0, deadline=50.0))
        queue.add(rows_of("a", 1, at=2.0))
        assert queue.expire(4.0) == []
        late = queue.expire(6.0)
        assert tasks_taken(late) == {"a": 3} and len(queue) == 3
        assert tasks_taken(queue.take(32)) == {"a": 1, "b": 2} and len(queue) == 0


def test_shares_follow_the_weights():
    weights = {"gold": 3.0, "basic": 1.0}
    assert fair_shares({"gold": 100, "basic": 100}, 32, weight=weights.get) == {
        "gold": 24,
        "basic": 8,
    }
    # a heavy flow with few rows leaves the rest to the light one
    assert fair_shares({"gold": 4, "basic": 100}, 32, weight=weights.get) == {
        "gold": 4,
        "basic": 28,
    }
    assert fair_shares({"gold": 100}, 32, weight=weights.get) == {"gold": 32}  # alone: all
    three = fair_shares({"a": 99, "b": 99, "c": 99}, 32, weight={"a": 2, "b": 1, "c": 1}.get)
    assert sum(three.values()) == 32 and three["a"] == 16


def test_a_tenant_shares_one_flow_across_its_tasks():
    gold, basic = Flow("token:gold", 3.0), Flow("token:basic", 1.0)
    queue = FairQueue()
    for i in range(8):  # basic spreads 80 rows over 8 tasks, gold sends 40 to one
        queue.add(rows_of(f"basic-{i}", 10, at=float(i), flow=basic))
    queue.add(rows_of("gold-1", 40, at=9.0, flow=gold))
    taken = tasks_taken(queue.take(32))
    assert taken["gold-1"] == 24 and sum(taken.values()) == 32
    assert queue.rows_before(gold, 3) == 19 + 6  # its 16 + 3, and a third as many of basic's
    assert queue.rows_before(basic, 1) == 73 + 16  # its 72 + 1, and all 16 of gold's left


def test_light_flows_are_taken_alone_whole_and_oldest_first():
    queue = FairQueue()
    queue.add(rows_of("flood", 40, at=0.0))
    queue.add(rows_of("quiet", 1, at=2.0))
    queue.add(rows_of("busy", 2, at=1.0))  # light by its queue, but 9 rows are running
    queue.add(rows_of("pair", 2, at=3.0))
    queue.add(rows_of("late", 2, at=4.0))  # would not fit beside the others
    running = Counter({"task:flood": 32, "task:busy": 9, "task:pair": 2})
    taken = queue.take_light(4, running, heavy=32)
    assert [r.job.lease.task for r in taken] == ["quiet", "pair", "pair"]
    assert len(queue) == 44 and tasks_taken(queue.take(64)) == {"flood": 40, "busy": 2, "late": 2}


def test_light_flows_wait_while_no_flow_is_heavy():
    queue = FairQueue()
    queue.add(rows_of("even", 16, at=0.0))
    queue.add(rows_of("quiet", 1, at=1.0))
    running = Counter({"task:even": 16})  # 32 rows: a forward's, not more
    assert queue.take_light(4, running, heavy=32) == []
    running["task:even"] += 1
    assert [r.job.lease.task for r in queue.take_light(4, running, heavy=32)] == ["quiet"]


def test_arrival_order_has_no_light_flows():
    queue = ArrivalQueue()
    queue.add(rows_of("quiet", 1, at=0.0))
    assert queue.take_light(4, Counter(), heavy=0) == [] and len(queue) == 1
