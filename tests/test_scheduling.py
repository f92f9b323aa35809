"""Which rows a forward takes: fair shares among waiting tasks, arrival order, deadlines."""

from __future__ import annotations

from types import SimpleNamespace

from bitpatch.server.core.scheduling import ArrivalQueue, FairQueue, fair_shares


def rows_of(task: str, n: int, at: float, deadline: float | None = None, length: int = 8):
    """n queued rows of one request of `task`, queued at `at`."""
    job = SimpleNamespace(
        lease=SimpleNamespace(task=task),
        queued_at=at,
        deadline=deadline,
        late=lambda now: deadline is not None and now > deadline,
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
    assert len(fair) == 320 - 30 and arrival.rows_before("quiet", 1) == 291
    assert fair.rows_before("quiet", 1) == 2  # one of its own, one of the noisy task's


def test_rows_past_their_deadline_leave_the_queue():
    for queue in (FairQueue(), ArrivalQueue()):
        queue.add(rows_of("a", 3, at=0.0, deadline=5.0))
        queue.add(rows_of("b", 2, at=1.0, deadline=50.0))
        queue.add(rows_of("a", 1, at=2.0))
        assert queue.expire(4.0) == []
        late = queue.expire(6.0)
        assert tasks_taken(late) == {"a": 3} and len(queue) == 3
        assert tasks_taken(queue.take(32)) == {"a": 1, "b": 2} and len(queue) == 0
