"""One queue for all tasks: rows of many requests form one mixed-task forward.

Requests are tokenized before they are queued; the batcher takes the oldest row and the rows
closest to it in length (up to --max-batch-size; while admitted requests are still being
tokenized it waits for them, at most --max-wait-ms, so a lone request never waits), runs
ONE engine forward on a free inference worker, and resolves each request when its rows are
done. With several workers (--workers), the next batch is formed as soon as one is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..patches.encoding import EncodedRow, collate
from ..patches.engine import MultiTaskEngine, TaskLogits
from ..patches.outputs import to_predictions
from .errors import ApiError
from .metrics import Metrics
from .registry import Lease

log = logging.getLogger(__name__)
LOOKAHEAD = 4  # batches' worth of queued rows searched for similar lengths


@dataclass
class Job:
    """One request: its lease, encoded rows, and where its predictions go."""

    lease: Lease
    rows: list[EncodedRow]
    future: asyncio.Future
    predictions: list = field(default_factory=list)
    pending: int = 0


@dataclass(frozen=True)
class Row:
    """One input of a job, waiting in the queue."""

    job: Job
    index: int
    length: int


class Batcher:
    """Bounded row queue + a loop that runs mixed-task forwards off the event loop."""

    def __init__(
        self,
        engine: MultiTaskEngine,
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        inference: ThreadPoolExecutor | None = None,
        workers: int = 1,
    ):
        self.engine, self.metrics = engine, metrics
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: list[Row] = []
        self._wake = asyncio.Event()
        self._incoming = 0  # requests admitted and being tokenized, not yet queued
        self._in_flight: set[asyncio.Task] = set()  # batches being computed and resolved
        self._free_workers = asyncio.Semaphore(workers)
        # the threads that run torch (shared with loading; see ServerState.inference)
        self._executor = inference or ThreadPoolExecutor(
            workers, thread_name_prefix="bitpatch-forward"
        )
        self._task: asyncio.Task | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a forward."""
        return len(self._queue)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued row and the forward in flight, then stop."""
        while self._queue or self._in_flight or self._incoming > 0:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
        self._executor.shutdown(wait=True)

    def admit(self, n_rows: int) -> None:
        """Reserve room for a request about to be tokenized; 503 when the queue is full."""
        if len(self._queue) + n_rows > self.max_queue:
            self.metrics.rejections.labels("queue_full").inc()
            raise ApiError(
                503,
                "overloaded",
                f"the queue holds {len(self._queue)} rows (limit {self.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        self._incoming += 1

    def withdraw(self) -> None:
        """An admitted request failed before it was queued."""
        self._incoming -= 1
        self._wake.set()

    def submit(self, lease: Lease, rows: list[EncodedRow]) -> asyncio.Future:
        """Queue an admitted request's rows."""
        self._incoming -= 1
        job = Job(
            lease, rows, asyncio.get_running_loop().create_future(), [None] * len(rows), len(rows)
        )
        for i, row in enumerate(rows):
            self._queue.append(Row(job, i, len(row["input_ids"])))
        self.metrics.queue_rows.set(len(self._queue))
        self._wake.set()
        return job.future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._free_workers.acquire()
            self._wake.clear()
            await self._fill()
            batch = self._take()
            if self._queue:
                self._wake.set()
            if not batch:
                self._free_workers.release()
                continue
            task = asyncio.get_running_loop().create_task(self._forward(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._free_workers.release()

    async def _fill(self) -> None:
        """Wait up to max-wait for requests still being tokenized, while the batch has room."""
        deadline = time.perf_counter() + self.max_wait
        while self._incoming > 0 and len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            self._wake.clear()

    def _take(self) -> list[Row]:
        """The oldest row plus the queued rows nearest to it in length."""
        if not self._queue:
            return []
        window = self._queue[: self.max_batch_size * LOOKAHEAD]  # in arrival order
        chosen = [window[i] for i in pick_rows([r.length for r in window], self.max_batch_size)]
        taken = {id(r) for r in chosen}
        self._queue = [r for r in self._queue if id(r) not in taken]
        self.metrics.queue_rows.set(len(self._queue))
        return chosen

    async def _forward(self, batch: list[Row]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._compute, batch)
        except Exception as err:  # a failed forward fails its requests, not the server
            log.exception("event=forward_failed rows=%d", len(batch))
            for row in batch:
                if not row.job.future.done():
                    row.job.future.set_exception(err)
            return
        for row, prediction in zip(batch, outputs, strict=True):
            job = row.job
            job.predictions[row.index] = prediction
            job.pending -= 1
            if job.pending == 0 and not job.future.done():
                job.future.set_result(job.predictions)

    def _compute(self, batch: list[Row]) -> list[dict]:
        """Inference thread: collate, one forward, predictions."""
        started = time.perf_counter()
        rows = [r.job.rows[r.index] for r in batch]
        keys = [r.job.lease.key for r in batch]
        padded = collate(rows, self.engine.backbone.tokenizer.pad_token_id)
        groups = self.engine.forward_by_task(padded, keys, [id(r.job) for r in batch])
        out = _predictions(batch, groups)
        self.metrics.forward.observe(time.perf_counter() - started)
        self.metrics.batch_rows.observe(len(batch))
        self.metrics.batch_tasks.observe(len(set(keys)))
        mask = padded["attention_mask"]  # (B, T)
        self.metrics.batch_fill.observe(float(mask.sum()) / mask.numel())
        return out


def pick_rows(lengths: list[int], batch_size: int) -> list[int]:
    """Positions of the oldest row (position 0) and the rows nearest to it in length, older
    first on ties: the batch the server runs next from a queue in arrival order."""
    first = lengths[0]
    return sorted(range(len(lengths)), key=lambda i: (abs(lengths[i] - first), i))[:batch_size]


def _predictions(batch: list[Row], groups: list[TaskLogits]) -> list[dict]:
    """Each row's prediction, computed per task group (a few torch calls per task, not per row)."""
    out: list = [None] * len(batch)
    for group in groups:
        head = batch[group.rows[0]].job.lease.head
        for i, prediction in zip(group.rows, to_predictions(head, group.logits), strict=True):
            out[i] = prediction
    return out
