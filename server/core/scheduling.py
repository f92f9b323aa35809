"""Which queued rows the next forward takes: the seam between the batcher and its policy.

Rows belong to flows: a scoped token's tenant (every task it calls; its `weight` from the
tokens file), else the row's task (weight 1).
- `FairQueue` (the default): every flow waiting gets a share of each forward's rows in
  proportion to its weight (weighted max-min fair: a flow with fewer rows than its share leaves
  the rest to the others), its own rows oldest first; with more flows waiting than a forward has
  rows, the flows whose oldest row waited longest go first. A flow alone gets the whole batch.
  A flow that floods the server fills only its own queue: everyone else's rows still go out in
  the next forward. While some flow is heavy (over a full forward's rows queued and in
  running forwards), the batcher may take the rows of *light* flows (at most a few rows
  queued and a few in running forwards) first, alone, in a short forward (`take_light`): a
  quiet tenant's row then rides in none of the flood's full forwards.
- `ArrivalQueue`: the oldest row and the queued rows nearest to it in length (first come, first
  served; the least padding for the padded forward).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .batcher import Row

LOOKAHEAD = 4  # ArrivalQueue: batches' worth of queued rows searched for similar lengths


@dataclass(frozen=True)
class Flow:
    """Whose share a row counts toward, and that share's weight."""

    key: str
    weight: float = 1.0


def task_flow(task: str) -> Flow:
    """The flow of a task's rows sent without a scoped token."""
    return Flow(f"task:{task}")


def flow_of(row: Row) -> Flow:
    """The flow a queued row belongs to."""
    return row.job.flow or task_flow(row.job.lease.task)


class RowQueue(Protocol):
    """The queued rows of every task, and the policy that picks a forward's rows."""

    def __len__(self) -> int: ...

    def add(self, rows: list[Row]) -> None:
        """Queue one request's rows."""

    def take(self, batch_size: int) -> list[Row]:
        """Remove and return the next forward's rows (the queue is not empty)."""

    def expire(self, now: float) -> list[Row]:
        """Remove and return every row whose request's deadline passed."""

    def take_light(self, limit: int, running: Counter[str], heavy: int) -> list[Row]:
        """While some flow is heavy (more than `heavy` rows queued and in `running`, flow key
        -> rows in running forwards), remove and return up to `limit` rows of light flows:
        flows with at most `limit` rows queued and at most `limit` running, those waiting
        longest first (none: the policy has no short forwards)."""

    def rows_before(self, flow: Flow, rows: int) -> int:
        """How many rows are taken (its own included) until the last of `rows` new rows of
        `flow` is."""


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

    def take_light(self, limit: int, running: Counter[str], heavy: int) -> list[Row]:
        """First come, first served has no express forwards."""
        return []

    def rows_before(self, flow: Flow, rows: int) -> int:
        """Everything queued goes first."""
        return len(self.rows) + rows


class FairQueue:
    """A queue per flow; each forward shares its rows among the flows waiting by weight."""

    def __init__(self):
        self.flows: dict[str, deque[Row]] = {}
        self.weights: dict[str, float] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, rows: list[Row]) -> None:
        """At the end of their flow's queue."""
        for row in rows:
            flow = flow_of(row)
            self.flows.setdefault(flow.key, deque()).append(row)
            self.weights[flow.key] = flow.weight
        self.count += len(rows)

    def take(self, batch_size: int) -> list[Row]:
        """Each waiting flow's share of `batch_size` rows, oldest first within a flow."""
        waiting = {key: len(q) for key, q in self.flows.items()}
        shares = fair_shares(waiting, batch_size, self._age, self.weights.get)
        chosen: list[Row] = []
        for key, share in shares.items():
            queue = self.flows[key]
            chosen += [queue.popleft() for _ in range(share)]
            if not queue:
                self._drop(key)
        self.count -= len(chosen)
        return chosen

    def _drop(self, key: str) -> None:
        """Forget a flow with nothing queued."""
        del self.flows[key], self.weights[key]

    def _age(self, key: str) -> float:
        """When the flow's oldest queued row arrived."""
        return self.flows[key][0].job.queued_at

    def expire(self, now: float) -> list[Row]:
        """Rows past their deadline (they are queued in arrival order within a flow)."""
        late: list[Row] = []
        for key in list(self.flows):
            queue = self.flows[key]
            kept = deque(r for r in queue if not r.job.late(now))
            if len(kept) != len(queue):
                late += [r for r in queue if r.job.late(now)]
                if kept:
                    self.flows[key] = kept
                else:
                    self._drop(key)
        self.count -= len(late)
        return late

    def take_light(self, limit: int, running: Counter[str], heavy: int) -> list[Row]:
        """Whole light flows, the one whose oldest row waited longest first, while they fit
        (none while no flow is heavy)."""
        if not self._some_heavy(running, heavy):
            return []
        light = [
            key
            for key, queue in self.flows.items()
            if len(queue) <= limit and running.get(key, 0) <= limit
        ]
        chosen: list[Row] = []
        for key in sorted(light, key=self._age):
            queue = self.flows[key]
            if len(chosen) + len(queue) > limit:
                break
            chosen += queue
            self._drop(key)
        self.count -= len(chosen)
        return chosen

    def _some_heavy(self, running: Counter[str], heavy: int) -> bool:
        """Some flow has more than `heavy` rows queued and running."""
        if max(running.values(), default=0) > heavy:
            return True
        return any(len(q) + running.get(key, 0) > heavy for key, q in self.flows.items())

    def rows_before(self, flow: Flow, rows: int) -> int:
        """Its own queue, and each other flow's rows taken meanwhile (in proportion to the
        weights; a flow with fewer waiting goes no further)."""
        mine = len(self.flows.get(flow.key, ())) + rows
        others = sum(
            min(len(q), mine * self.weights[key] / flow.weight)
            for key, q in self.flows.items()
            if key != flow.key
        )
        return mine + round(others)


def fair_shares(waiting: dict[str, int], batch_size: int, age=None, weight=None) -> dict[str, int]:
    """Rows each flow gets of a forward of `batch_size` (weighted max-min fair; `weight`: key ->
    weight, default equal); with more flows than rows, one row each to the flows with the
    oldest `age` (the earliest value)."""
    if len(waiting) > batch_size:
        oldest = sorted(waiting, key=age)[:batch_size]
        return {key: 1 for key in oldest}
    weight = weight or (lambda key: 1.0)
    shares = dict.fromkeys(waiting, 0)
    left = batch_size
    open_flows = sorted((k for k in waiting if waiting[k]), key=lambda k: -weight(k))
    while left and open_flows:
        total, budget = sum(weight(k) for k in open_flows), left  # this round's rows
        for key in list(open_flows):
            grant = max(1, int(budget * weight(key) / total))
            give = min(grant, waiting[key] - shares[key], left)
            shares[key] += give
            left -= give
            if shares[key] == waiting[key]:
                open_flows.remove(key)
            if not left:
                break
    return {key: n for key, n in shares.items() if n}


def pick_rows(lengths: list[int], batch_size: int) -> list[int]:
    """Positions of the oldest row (position 0) and the rows nearest to it in length, older
    first on ties: the batch the server runs next from a queue in arrival order."""
    first = lengths[0]
    return sorted(range(len(lengths)), key=lambda i: (abs(lengths[i] - first), i))[:batch_size]


QUEUES = {"fair": FairQueue, "arrival": ArrivalQueue}


def queue_for(policy: str) -> RowQueue:
    """A new empty queue of the named policy."""
    return QUEUES[policy]()
