"""One queue for all tasks: rows of many requests form one mixed-task forward.

Requests are tokenized before they are queued. Each inference worker thread takes its next
batch itself as soon as its last forward ends: up to --max-batch-size rows chosen by the queue's
policy (server/core/scheduling.py: each waiting task's fair share, or first come first served;
while admitted requests are still being tokenized it waits for them, at most --max-wait-ms, so
a lone request never waits), runs ONE engine forward, and hands the predictions to the event
loop, which resolves each request when its rows are done. The event loop never sits between two
forwards: a worker does not wait for it to pick a batch.

Admission bounds the queue (--max-queue rows, --max-queue-per-task per task: 429 for that task
alone) and refuses at once a request whose deadline it cannot meet: the forwards before its
last row, at the recent forward time, would end past it. A row still queued at its deadline is
failed when the next batch is taken, never computed late.

The lowest-numbered idle worker takes the next batch, so at low load the first worker serves
alone; a batch of a few rows that leaves nothing queued while no other worker is busy is a
*lone* forward and may run on every worker's threads (`lone_threads`): the others wait until it
ends.

Express forwards (`express_rows`, CPU only; by default where forwards have layer breaks): while
some flow is heavy (more than max-batch-size rows queued and in running forwards), the rows of
light flows (a tenant or task with at most express_rows rows queued and as many in running
forwards) are taken first, alone, in a short forward: by the next worker to free up, or, while
every worker is busy, by the first worker to finish a layer of its full forward, which runs the
short forward on its own threads before its next layer (patches/layer_breaks.py; the hybrid
forward runs it through its ONNX Runtime graph). A light flow's row then waits at most one
layer of the flood's forwards, never a whole one, and no thread is added. A forward without
layer breaks (one ONNX Runtime graph) gets one more thread (one torch thread) that runs express
forwards beside the full ones instead, when express_rows is set. Short forwards cost more CPU
per row than full ones, so the flood gets somewhat less throughput.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch

from ...patches.encoding import EncodedRow, collate
from ...patches.engine import Engine, TaskLogits
from ...patches.layer_breaks import between_layers
from ...patches.outputs import to_predictions
from ...patches.tuning import name_os_thread
from ..errors import DeadlineExceeded, Overloaded, TaskQueueFull
from ..metrics import Metrics
from ..settings import Settings
from .batch_history import BatchHistory
from .registry import Lease
from .scheduling import Flow, flow_of, queue_for, task_flow

log = logging.getLogger(__name__)
FORWARD_SMOOTHING = 0.2  # weight of the newest forward in the recent seconds per row
# a request is admitted when its rows' estimated wait is at most this share of its time left:
# the estimate is a mean, and a row still queued at its deadline costs its tokenization and
# the client a full deadline's wait (at 2x overload with 250 ms deadlines, counting the running
# forwards whole and 0.8 cut the requests dropped from the queue from 13% to 1-4% of the
# refusals, at the same throughput)
ADMISSION_MARGIN = 0.8
# a lone forward of at most this many rows is widened to every worker's threads: at low load
# that halves a request's latency; a larger batch alone means the load is high, where the
# extra OpenMP threads' spinning between parallel regions cost CPU and add no throughput
WIDEN_ROWS = 4
# rows of an express forward by default, where forwards have layer breaks (none is added
# elsewhere): beside a flood at 5x capacity a quiet tenant's p99 was 1.8-2.4x its p99 alone
# with them (2.0x or less in 7 of 10 runs), 5-11x without (bench tenancy, docs/BENCHMARKS.md)
DEFAULT_EXPRESS_ROWS = 8


@dataclass(frozen=True)
class BatchPlan:
    """How rows become forwards: batch size, fill wait, queue bound, and the forward workers
    with their torch threads (`lone_threads`: a lone forward's; None: it is never widened)."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 2048
    workers: int = 1
    threads_per_worker: int = 1
    lone_threads: int | None = None
    max_queue_per_task: int = 0  # 0: only max_queue bounds a task
    policy: str = "fair"  # scheduling.QUEUES
    # rows of an express forward at most; 0: none; None: DEFAULT_EXPRESS_ROWS where the
    # engine's forwards have layer breaks, else none
    express_rows: int | None = 0

    @property
    def threads(self) -> int:
        """Inference threads: the workers, and the express thread if any (started only for a
        forward without layer breaks)."""
        return self.workers + (1 if self.express_rows else 0)

    @classmethod
    def from_settings(cls, settings: Settings, on_gpu: bool, cores: int) -> BatchPlan:
        """The plan for `cores` CPU threads: on CPU two forwards in flight by default (a core
        taken by the event loop slows one forward instead of stalling a whole OpenMP team)
        and express forwards, on a GPU one forward."""
        threads = settings.threads or cores
        workers = settings.workers or (1 if on_gpu else min(2, threads))
        per_worker = max(1, threads // workers)
        widened = workers * per_worker
        lone = widened if settings.widen_lone_forwards and widened > per_worker else None
        return cls(
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue,
            workers,
            per_worker,
            lone,
            settings.max_queue_per_task,
            settings.batching,
            0 if on_gpu else settings.express_rows,
        )


@dataclass
class Job:
    """One request: its lease, encoded rows, where its predictions go, and what to call once
    its rows are computed or failed (whether or not anyone still awaits the future)."""

    lease: Lease
    rows: list[EncodedRow]
    future: asyncio.Future
    on_done: Callable[[], None]
    predictions: list = field(default_factory=list)
    pending: int = 0  # rows not yet computed (or failed)
    shadow: bool = False  # a rollout's shadow rows: they ride along, nobody waits for them
    deadline: float | None = None  # time.monotonic() by which its rows must start
    queued_at: float = field(default_factory=time.monotonic)
    flow: Flow | None = None  # whose fair share its rows count toward (None: its task's)

    def late(self, now: float) -> bool:
        """Whether its deadline passed."""
        return self.deadline is not None and now > self.deadline


@dataclass(frozen=True)
class Row:
    """One input of a job, waiting in the queue."""

    job: Job
    index: int
    length: int


class Batcher:
    """Bounded row queue shared by the event loop (which adds rows) and the inference workers
    (which take batches); `_ready` guards the queue and the count of requests being tokenized."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        plan: BatchPlan,
        inference: ThreadPoolExecutor | None = None,
    ):
        self.engine, self.metrics = engine, metrics
        self.max_batch_size, self.max_wait = plan.max_batch_size, plan.max_wait_ms / 1000
        self.max_queue, self.max_queue_per_task = plan.max_queue, plan.max_queue_per_task
        self._queue = queue_for(plan.policy)
        self._task_rows: dict[str, int] = {}  # rows admitted and not yet taken, per task
        self._timed = 0  # queued rows with a deadline
        self._row_seconds = 0.0  # recent forward seconds per row (0 until the first forward)
        self._incoming = 0  # requests admitted and being tokenized, not yet queued
        self._ready = threading.Condition()
        self._stopping = False
        self._workers = plan.workers
        self._busy: set[int] = set()  # workers computing a batch now
        self._lone = False  # a lone forward holds every worker's threads
        self._lone_threads = plan.lone_threads  # torch threads of a lone forward; None: never
        self._threads_per_worker = plan.threads_per_worker
        self._express_rows = express_rows_for(plan.express_rows, engine.forward_yields)
        self._express_busy = False  # the express thread runs an express forward now
        # express forwards run in the workers' layer breaks, or else on an express thread
        self._in_breaks = bool(self._express_rows) and engine.forward_yields
        self._paused = threading.local()  # seconds each thread spent in express forwards in breaks
        # flow key -> rows in running forwards (kept only with express forwards: light flows)
        self._running_flows: Counter[str] = Counter()
        # the threads that run torch (shared with loading; see ServerState.inference): once
        # started, each of them runs one worker loop until stop()
        self._executor = inference or ThreadPoolExecutor(
            plan.threads, thread_name_prefix="bitpatch-forward"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: list[asyncio.Future] = []
        self.history = BatchHistory()

    @property
    def express_rows(self) -> int:
        """Rows of an express forward at most (0: none)."""
        return self._express_rows

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a forward."""
        return len(self._queue)

    def start(self) -> None:
        """Start one worker loop per inference thread (and the express loop when forwards have
        no layer breaks); results come back to the running loop."""
        self._loop = asyncio.get_running_loop()
        loops = [partial(self._work, i) for i in range(self._workers)]
        loops += [self._express] if self._express_rows and not self._in_breaks else []
        self._running = [asyncio.wrap_future(self._executor.submit(f)) for f in loops]

    async def stop(self) -> None:
        """Finish every queued row and admitted request and the forwards in flight, then stop."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        await asyncio.gather(*self._running)  # their last results were posted before they ended
        self._executor.shutdown(wait=True)

    def admit(
        self, n_rows: int, task: str, deadline: float | None = None, flow: Flow | None = None
    ) -> None:
        """Reserve room for a request about to be tokenized: Overloaded (503) when the queue is
        full, TaskQueueFull (429) when its task's is, DeadlineExceeded (503) when its rows
        could not start before `deadline` (time.monotonic()) in their flow (default: the
        task's)."""
        with self._ready:
            if len(self._queue) + n_rows > self.max_queue:
                self.metrics.rejections.labels("queue_full").inc()
                raise Overloaded(
                    f"the queue holds {len(self._queue)} rows (limit {self.max_queue}); "
                    "retry shortly",
                    headers={"Retry-After": "1"},
                )
            mine = self._task_rows.get(task, 0)
            if self.max_queue_per_task and mine + n_rows > self.max_queue_per_task:
                self.metrics.rejections.labels("task_queue_full").inc()
                raise TaskQueueFull(
                    f"task {task!r} has {mine} rows waiting (limit {self.max_queue_per_task}, "
                    "--max-queue-per-task); slow down or retry shortly",
                    headers={"Retry-After": "1"},
                )
            if deadline is not None:
                self._check_deadline(n_rows, flow or task_flow(task), deadline)
            self._task_rows[task] = mine + n_rows
            self._incoming += 1

    def _check_deadline(self, n_rows: int, flow: Flow, deadline: float) -> None:
        """DeadlineExceeded when the rows computed before these, at the recent seconds per
        row on every worker, would start them later than ADMISSION_MARGIN of the time left
        (caller holds _ready)."""
        ahead = (
            self._queue.rows_before(flow, n_rows) - n_rows + len(self._busy) * self.max_batch_size
        )  # the forwards running now, as if just started
        wait = ahead * self._row_seconds / self._workers
        if wait > ADMISSION_MARGIN * (deadline - time.monotonic()):
            self.metrics.rejections.labels("deadline").inc()
            raise DeadlineExceeded(
                f"the request's rows would start in ~{1000 * wait:.0f} ms, too close to or "
                "after its deadline (X-Bitpatch-Timeout-Ms or --max-queue-ms); nothing was "
                "computed; retry later or allow more time",
                headers={"Retry-After": "1"},
            )

    def withdraw(self, n_rows: int, task: str) -> None:
        """An admitted request failed before it was queued."""
        with self._ready:
            self._incoming -= 1
            self._untake(task, n_rows)
            self._ready.notify_all()

    def _untake(self, task: str, n_rows: int) -> None:
        """Rows of a task leave the admitted count (caller holds _ready)."""
        left = self._task_rows.get(task, 0) - n_rows
        if left > 0:
            self._task_rows[task] = left
        else:
            self._task_rows.pop(task, None)

    def submit(
        self,
        lease: Lease,
        rows: list[EncodedRow],
        on_done: Callable[[], None] = lambda: None,
        shadow: bool = False,
        deadline: float | None = None,
        flow: Flow | None = None,
    ) -> asyncio.Future:
        """Queue an admitted request's rows (`shadow`: a rollout's shadow rows, which do not
        count toward widening a lone forward) in `flow` (default: the task's); `on_done` runs
        on the event loop once they are computed (or failed, or past `deadline`)."""
        future = asyncio.get_running_loop().create_future()
        job = Job(lease, rows, future, on_done, [None] * len(rows), len(rows), shadow, deadline)
        job.flow = flow
        with self._ready:
            self._incoming -= 1
            self._queue.add([Row(job, i, len(row["input_ids"])) for i, row in enumerate(rows)])
            self._timed += len(rows) if deadline is not None else 0
            self.metrics.queue_rows.set(len(self._queue))
            self._ready.notify_all()  # idle workers, and any waiting for this request to fill
        return job.future

    def _work(self, worker: int) -> None:
        """Inference thread: take a batch, compute it, post the results; until stopped."""
        name_os_thread(f"bp-forward-{worker}")
        _own_torch_threads(self._threads_per_worker)
        while (taken := self._next_batch(worker)) is not None:
            batch, lone = taken
            breaks = nullcontext()  # a lone forward holds every core: nothing breaks in
            if self._in_breaks and not lone:
                breaks = between_layers(self._express_in_break)
            with self._threads(lone), breaks:
                outcome = self._run(batch, timed=True)
            with self._ready:  # idle before the answers go out: a request that follows
                self._busy.discard(worker)  # them finds no worker busy (and may run widened)
                if lone:  # the other workers may take batches again
                    self._lone = False
                self._ran(batch)
            self._loop.call_soon_threadsafe(_resolve, batch, outcome)

    def _express(self) -> None:
        """Express thread (one torch thread): light flows' rows while every worker is busy."""
        name_os_thread("bp-express")
        _own_torch_threads(1)
        while (batch := self._next_express()) is not None:
            outcome = self._run(batch, timed=False)
            with self._ready:
                self._express_busy = False
                self._ran(batch)
            self._loop.call_soon_threadsafe(_resolve, batch, outcome)

    def _express_in_break(self) -> None:
        """A worker between two halves of its forward: light flows' rows, if any wait, run now
        in a short forward on its threads (their seconds do not count as the full
        forward's)."""
        if not self._queue:  # a hint read without the lock; taken again under it
            return
        with self._ready:
            self._expire()
            batch = self._take_light()
            if not batch:
                return
            self._taken(batch)
            self.metrics.express_forwards.inc()
        started = time.perf_counter()
        outcome = self._run(batch, timed=False)
        with self._ready:
            self._ran(batch)
        self._loop.call_soon_threadsafe(_resolve, batch, outcome)
        self._paused.seconds = _paused_seconds(self._paused) + time.perf_counter() - started

    def _next_express(self) -> list[Row] | None:
        """Wait until every worker is busy and light flows have rows, take them (None once
        stopping: the workers finish the queue)."""
        with self._ready:
            while not self._stopping:
                if self._express_due():
                    self._expire()
                    batch = self._take_light()
                    if batch:
                        self._express_busy = True
                        self._taken(batch)
                        self.metrics.express_forwards.inc()
                        return batch
                self._ready.wait(0.5)
            return None

    def _take_light(self) -> list[Row]:
        """Light flows' rows for a short forward, while some flow has more than a full
        forward's rows queued and in running forwards (caller holds _ready)."""
        if not self._express_rows:
            return []
        return self._queue.take_light(self._express_rows, self._running_flows, self.max_batch_size)

    def _express_due(self) -> bool:
        """Rows wait and every worker runs a forward of its own (caller holds _ready)."""
        full = len(self._busy) == self._workers and not self._lone
        return full and not self._express_busy and bool(self._queue)

    def _run(self, batch: list[Row], timed: bool) -> list[dict] | Exception:
        """The batch's predictions, or the error that fails its requests (not the server);
        `timed`: its time per row feeds the deadline estimate (a worker's full forward)."""
        try:
            out, seconds = self._compute(batch)
        except Exception as err:
            log.exception("event=forward_failed rows=%d", len(batch))
            return err
        if timed:
            per_row, recent = seconds / len(batch), self._row_seconds
            self._row_seconds = (
                per_row if not recent else recent + FORWARD_SMOOTHING * (per_row - recent)
            )
        return out

    def _ran(self, batch: list[Row]) -> None:
        """A forward ended: its flows leave the running count (caller holds _ready)."""
        if self._express_rows:
            for key, count in Counter(flow_of(r).key for r in batch).items():
                left = self._running_flows[key] - count
                if left > 0:
                    self._running_flows[key] = left
                else:
                    del self._running_flows[key]
        self._ready.notify_all()

    def _next_batch(self, worker: int) -> tuple[list[Row], bool] | None:
        """Wait for rows (None once stopping with nothing left), let the batch fill, take it;
        also whether it is a lone forward."""
        with self._ready:
            while True:
                while not self._may_take(worker):
                    if not self._queue and self._stopping and self._incoming == 0:
                        return None
                    self._ready.wait(0.5)
                self._wait_to_fill()
                if self._may_take(worker):  # another worker may have taken every row meanwhile
                    batch, lone = self._take(worker)
                    if batch:
                        return batch, lone

    def _expire(self) -> None:
        """Fail the queued rows whose deadline passed (caller holds _ready; no scan while no
        queued row has a deadline)."""
        if not self._timed:
            return
        late = self._queue.expire(time.monotonic())
        if not late:
            return
        self._timed -= len(late)
        for task, count in Counter(r.job.lease.task for r in late).items():
            self._untake(task, count)
        self.metrics.rejections.labels("deadline_queued").inc(len({id(r.job) for r in late}))
        error = DeadlineExceeded(
            "the request's rows did not start before its deadline (X-Bitpatch-Timeout-Ms or "
            "--max-queue-ms); nothing was computed; retry later or allow more time",
            headers={"Retry-After": "1"},
        )
        self._loop.call_soon_threadsafe(_resolve, late, error)

    def _may_take(self, worker: int) -> bool:
        """Rows wait, no lone forward runs, and every lower-numbered worker is busy (caller
        holds _ready)."""
        lower_busy = all(w in self._busy for w in range(worker))
        return bool(self._queue) and not self._lone and lower_busy

    @contextmanager
    def _threads(self, lone: bool):
        """A lone forward runs on `lone_threads` torch threads, then the worker's own again
        (torch.set_num_threads sizes the calling thread's OpenMP team; the other workers keep
        theirs)."""
        if not lone:
            yield
            return
        own = torch.get_num_threads()
        torch.set_num_threads(self._lone_threads)
        try:
            yield
        finally:
            torch.set_num_threads(own)

    def _wait_to_fill(self) -> None:
        """Up to max-wait for requests still being tokenized, while the batch has room (caller
        holds _ready; waiting releases it)."""
        deadline = time.perf_counter() + self.max_wait
        while self._incoming > 0 and len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._ready.wait(remaining)

    def _take(self, worker: int) -> tuple[list[Row], bool]:
        """The rows the queue's policy picks, and whether they run as a lone forward (caller
        holds _ready; rows past their deadline are failed first)."""
        self._expire()
        if not self._queue:
            return [], False  # every row was late: nothing to run
        chosen = self._take_light() or self._queue.take(self.max_batch_size)
        self._taken(chosen)
        idle = not (self._queue or self._incoming or self._busy or self._express_busy)
        served = sum(not r.job.shadow for r in chosen)  # shadow rows ride along
        self._lone = idle and self._lone_threads is not None and served <= WIDEN_ROWS
        self._busy.add(worker)
        if self._queue:
            self._ready.notify_all()  # the next idle worker may take the rows left
        if self._lone:
            self.metrics.lone_forwards.inc()
        return chosen, self._lone

    def _taken(self, chosen: list[Row]) -> None:
        """Rows leave the queue for a forward (caller holds _ready)."""
        self._timed -= sum(r.job.deadline is not None for r in chosen)
        for task, count in Counter(r.job.lease.task for r in chosen).items():
            self._untake(task, count)
        if self._express_rows:
            self._running_flows.update(flow_of(r).key for r in chosen)
        self.metrics.queue_rows.set(len(self._queue))

    def _compute(self, batch: list[Row]) -> tuple[list[dict], float]:
        """Inference thread: collate, one forward, predictions; and its seconds (without the
        express forwards it ran in its layer breaks)."""
        paused_before, started = _paused_seconds(self._paused), time.perf_counter()
        rows = [r.job.rows[r.index] for r in batch]
        keys = [r.job.lease.key for r in batch]
        padded = collate(rows, self.engine.backbone.tokenizer.pad_token_id)
        groups = self.engine.forward_by_task(padded, keys)
        out = _predictions(batch, groups)
        paused = _paused_seconds(self._paused) - paused_before
        seconds = time.perf_counter() - started - paused
        self.metrics.forward.observe(seconds)
        self.metrics.batch_rows.observe(len(batch))
        tasks = len(set(keys))
        self.metrics.batch_tasks.observe(tasks)
        self.metrics.traffic.forward(len(batch), tasks, self.queued_rows)
        mask = padded["attention_mask"]  # (B, T)
        self.metrics.batch_fill.observe(float(mask.sum()) / mask.numel())
        kinds = Counter(r.job.lease.head.kind.name for r in batch)
        for kind, count in kinds.items():
            self.metrics.rows_by_kind.labels(kind).inc(count)
        task_rows = dict(Counter(r.job.lease.task for r in batch))
        self.history.record([r.length for r in batch], task_rows, seconds, dict(kinds))
        self.metrics.tasks_seen.rows(task_rows)
        return out, seconds


def _paused_seconds(paused: threading.local) -> float:
    """Seconds this thread has spent in express forwards in its layer breaks."""
    return getattr(paused, "seconds", 0.0)


def express_rows_for(planned: int | None, forward_yields: bool) -> int:
    """The plan's express rows, or by default DEFAULT_EXPRESS_ROWS where forwards have layer
    breaks (express forwards then add no thread) and none elsewhere."""
    if planned is not None:
        return planned
    return DEFAULT_EXPRESS_ROWS if forward_yields else 0


def _own_torch_threads(count: int) -> None:
    """Size the calling thread's torch threads. torch sizes a thread at its first use from the
    process-wide value, which the last set_num_threads on any thread wrote, so that first use
    comes before the setting here (or a worker could get the express thread's one)."""
    torch.get_num_threads()
    torch.set_num_threads(count)


def _resolve(batch: list[Row], outcome: list[dict] | Exception) -> None:
    """Event loop: give each row's prediction (or the forward's error) to its request."""
    for i, row in enumerate(batch):
        job = row.job
        job.pending -= 1
        if isinstance(outcome, Exception):
            if not job.future.done():
                job.future.set_exception(outcome)
        else:
            job.predictions[row.index] = outcome[i]
        if job.pending == 0:
            if not job.future.done():
                job.future.set_result(job.predictions)
            job.on_done()


def _predictions(batch: list[Row], groups: list[TaskLogits]) -> list[dict]:
    """Each row's prediction, computed per task group (a few torch calls per task, not per row)."""
    out: list = [None] * len(batch)
    for group in groups:
        head = batch[group.rows[0]].job.lease.head
        encoded = [batch[i].job.rows[batch[i].index] for i in group.rows]
        predictions = to_predictions(head, group.logits, encoded)
        for i, prediction in zip(group.rows, predictions, strict=True):
            out[i] = prediction
    return out
