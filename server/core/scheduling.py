"""Which queued rows the next forward takes: the seam between the batcher and its policy.

- `FairQueue` (the default): every task waiting gets an equal share of each forward's rows
  (max-min fair: a task with fewer rows than its share leaves the rest to the others), its own
  rows oldest first; with more tasks waiting than a forward has rows, the tasks whose oldest row
  waited longest go first. A task alone gets the whole batch. A task that floods the server
  fills only its own queue: everyone else's rows still go out in the next forward.
- `ArrivalQueue`: the oldest row and the queued rows nearest to it in length (first come, first
  served; the least padding for the padded forward).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .batcher import Row

LOOKAHEAD = 4  # ArrivalQueue: batches' worth of queued rows searched for similar lengths


class RowQueue(Protocol):
    """The queued rows of every task, and the policy that picks a forward's rows."""

    def __len__(self) -> int: ...

    def add(self, rows: list[Row]) -> None:
        """Queue one request's rows."""

    def take(self, batch_size: int) -> list[Row]:
        """Remove and return the next forward's rows (the queue is not empty)."""

    def expire(self, now: float) -> list[Row]:
        """Remove and return every row whose request's deadline passed."""

    def rows_before(self, task: str, rows: int) -> int:
        """How many rows are taken (its own included) until the last of `rows` new rows of
        `task` is."""


class ArrivalQueue:
    """First come, first served, grouping rows of similar length."""

    def __init__(self):
        self.rows: list[Row] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: list[Row]) -> None:
        """In arrival order."""
        self.rows.extend(rows)

    def take(self, batch_size: int) -> list[Row]:
        """The oldest row and the rows nearest to it in length."""
        window = self.rows[: batch_size * LOOKAHEAD]
        chosen = [window[i] for i in pick_rows([r.length for r in window], batch_size)]
        taken = {id(r) for r in chosen}
        self.rows = [r for r in self.rows if id(r) not in taken]
        return chosen

    def expire(self, now: float) -> list[Row]:
        """Rows past their deadline."""
        late = [r for r in self.rows if r.job.late(now)]
        if late:
            gone = {id(r) for r in late}
            self.rows = [r for r in self.rows if id(r) not in gone]
        return late

    def rows_before(self, task: str, rows: int) -> int:
        """Everything queued goes first."""
        return len(self.rows) + rows


class FairQueue:
    """A queue per task; each forward shares its rows equally among the tasks waiting."""

    def __init__(self):
        self.tasks: dict[str, deque[Row]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, rows: list[Row]) -> None:
        """At the end of their task's queue."""
        for row in rows:
            self.tasks.setdefault(row.job.lease.task, deque()).append(row)
        self.count += len(rows)

    def take(self, batch_size: int) -> list[Row]:
        """Each waiting task's share of `batch_size` rows, oldest first within a task."""
        shares = fair_shares({t: len(q) for t, q in self.tasks.items()}, batch_size, self._age)
        chosen: list[Row] = []
        for task, share in shares.items():
            queue = self.tasks[task]
            chosen += [queue.popleft() for _ in range(share)]
            if not queue:
                del self.tasks[task]
        self.count -= len(chosen)
        return chosen

    def _age(self, task: str) -> float:
        """When the task's oldest queued row arrived."""
        return self.tasks[task][0].job.queued_at

    def expire(self, now: float) -> list[Row]:
        """Rows past their deadline (they are queued in arrival order within a task)."""
        late: list[Row] = []
        for task in list(self.tasks):
            queue = self.tasks[task]
            kept = deque(r for r in queue if not r.job.late(now))
            if len(kept) != len(queue):
                late += [r for r in queue if r.job.late(now)]
                if kept:
                    self.tasks[task] = kept
                else:
                    del self.tasks[task]
        self.count -= len(late)
        return late

    def rows_before(self, task: str, rows: int) -> int:
        """Its own queue, and as many of each other task's rows (max-min fair shares: a task
        with fewer waiting goes no further)."""
        mine = len(self.tasks.get(task, ())) + rows
        others = sum(min(len(q), mine) for t, q in self.tasks.items() if t != task)
        return mine + others


def fair_shares(waiting: dict[str, int], batch_size: int, age=None) -> dict[str, int]:
    """Rows each task gets of a forward of `batch_size` (max-min fair); with more tasks than
    rows, one row each to the tasks with the oldest `age` (the earliest value)."""
    if len(waiting) > batch_size:
        oldest = sorted(waiting, key=age)[:batch_size]
        return {task: 1 for task in oldest}
    shares = dict.fromkeys(waiting, 0)
    left, open_tasks = batch_size, [t for t in waiting if waiting[t]]
    while left and open_tasks:
        each = max(1, left // len(open_tasks))
        for task in list(open_tasks):
            give = min(each, waiting[task] - shares[task], left)
            shares[task] += give
            left -= give
            if shares[task] == waiting[task]:
                open_tasks.remove(task)
            if not left:
                break
    return {task: n for task, n in shares.items() if n}


def pick_rows(lengths: list[int], batch_size: int) -> list[int]:
    """Positions of the oldest row (position 0) and the rows nearest to it in length, older
    first on ties: the batch the server runs next from a queue in arrival order."""
    first = lengths[0]
    return sorted(range(len(lengths)), key=lambda i: (abs(lengths[i] - first), i))[:batch_size]


QUEUES = {"fair": FairQueue, "arrival": ArrivalQueue}


def queue_for(policy: str) -> RowQueue:
    """A new empty queue of the named policy."""
    return QUEUES[policy]()
