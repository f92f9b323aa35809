"""The predict path after decoding, as named stages: lease -> tokenize -> batch -> (forward, on
the inference workers) -> encode. One object owns the whole saga, so a failure at any stage
gives back exactly what the earlier stages took."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from ...patches.encoding import EncodedRow, Item
from ...patches.engine import TaskHead
from ...patches.row_encoder import RowEncoder
from ...patches.tuning import name_os_thread
from ..errors import InvalidRequest
from .batcher import Batcher
from .registry import Lease, Registry

PAIR_SHAPES = {"text": ("single texts", '"text"'), "text_pair": ("pairs", '["text", "text_pair"]')}
HeadCheck = Callable[[TaskHead], None] | None
LEASE_TRIES = 3  # a version evicted between loading it and leasing it is loaded again
# requests of up to this many characters are tokenized on the event loop (~30 us for a short
# sentence: cheaper than two thread hand-offs); longer ones on the tokenizer threads
INLINE_CHARS = 2048


@dataclass(frozen=True)
class TaskCall:
    """What a request asks of one task: its inputs, the version asked for (None: the active
    one), and a check of what the request needs from the task, run on the leased head."""

    task: str
    inputs: list[Item]
    version: int | None = None
    check: HeadCheck = None


@dataclass(frozen=True)
class Outcome:
    """What one task computed for a call's inputs: the version and head used, the predictions
    in input order, and the tokens read (special tokens included, after truncation)."""

    task: str
    version: int
    head: TaskHead
    predictions: list[dict]
    tokens: int


class PredictPipeline:
    """Runs predict calls through the registry, the tokenizer pool and the batcher."""

    def __init__(self, registry: Registry, batcher: Batcher, tokenize_threads: int = 2):
        self.registry, self.batcher = registry, batcher
        self.encoder = RowEncoder(registry.engine.backbone.tokenizer)
        self.tokenize_pool = ThreadPoolExecutor(
            tokenize_threads,
            thread_name_prefix="tokenize",
            initializer=name_os_thread,
            initargs=("bp-tokenize",),
        )

    async def run(self, asked: TaskCall) -> Outcome:
        """The inputs through one task version; the call's check sees the leased version's
        head before any row is queued (what a protocol's request asks of the task)."""
        inputs = asked.inputs
        lease = await self.lease(asked.task, asked.version)
        try:
            if asked.check is not None:
                asked.check(lease.head)
            check_inputs_fit(lease, inputs)
            self.batcher.admit(len(inputs))
        except BaseException:
            self.registry.release(lease)
            raise
        try:
            rows = await self.tokenize(lease, inputs)
        except BaseException:
            self.batcher.withdraw()
            self.registry.release(lease)
            raise
        # the batcher gives the lease back once the rows are computed, even if this request
        # is cancelled meanwhile (its rows may already be in a forward)
        done = self.batcher.submit(lease, rows, on_done=lambda: self.registry.release(lease))
        predictions = await done
        return Outcome(asked.task, lease.version, lease.head, predictions, count_tokens(rows))

    async def fan_out(self, tasks: list[str], inputs: list[Item]) -> list[Outcome]:
        """Every input through each task's active version, all rows batched together; every
        task is leased and checked before any work, so a bad one fails the call at once."""
        leases = await self.lease_all(tasks, inputs)
        admitted = 0
        try:
            for _ in leases:
                self.batcher.admit(len(inputs))
                admitted += 1
            rows = await self.tokenize_once(leases, inputs)
        except BaseException:
            for _ in range(admitted):
                self.batcher.withdraw()
            for lease in leases:
                self.registry.release(lease)
            raise
        done = [
            self.batcher.submit(lease, rows[shape_of(lease)], partial(self.registry.release, lease))
            for lease in leases
        ]
        predictions = await asyncio.gather(*done)
        return [
            Outcome(
                lease.task, lease.version, lease.head, found, count_tokens(rows[shape_of(lease)])
            )
            for lease, found in zip(leases, predictions, strict=True)
        ]

    async def lease_all(self, tasks: list[str], inputs: list[Item]) -> list[Lease]:
        """A lease on each task's active version, its inputs checked; all or none."""
        leases: list[Lease] = []
        try:
            for task in tasks:
                leases.append(await self.lease(task, None))
                check_inputs_fit(leases[-1], inputs)
        except BaseException:
            for lease in leases:
                self.registry.release(lease)
            raise
        return leases

    async def tokenize_once(self, leases: list[Lease], inputs: list[Item]) -> dict:
        """The inputs' rows for each distinct tokenization the tasks need (length, offsets)."""
        rows: dict[tuple[int, bool], list[EncodedRow]] = {}
        for lease in leases:
            if shape_of(lease) not in rows:
                rows[shape_of(lease)] = await self.tokenize(lease, inputs)
        return rows

    async def head(self, task: str, version: int | None) -> tuple[int, TaskHead]:
        """The version number and head of a task version (loaded if it is not resident)."""
        lease = await self.lease(task, version)
        self.registry.release(lease)
        return lease.version, lease.head

    async def lease(self, task: str, version: int | None) -> Lease:
        """Pin the version; one that is stored but not resident is loaded off the event loop."""
        for _ in range(LEASE_TRIES):
            lease = self.registry.lease(task, version)
            if lease is not None:
                return lease
            wanted = version if version is not None else self.registry.active_version(task)
            await asyncio.to_thread(self.registry.make_resident, task, wanted)
        raise RuntimeError(f"version {version} of {task!r} could not be kept resident")

    async def tokenize(self, lease: Lease, inputs: list[Item]) -> list[EncodedRow]:
        """Token ids of every input: here for short requests, else on the tokenizer threads."""
        head = lease.head
        chars = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        if chars <= INLINE_CHARS:
            return self.encoder.encode(inputs, head.max_length, head.wants_offsets)
        return await asyncio.get_running_loop().run_in_executor(
            self.tokenize_pool, self.encoder.encode, inputs, head.max_length, head.wants_offsets
        )

    def close(self) -> None:
        """Stop the tokenizer threads."""
        self.tokenize_pool.shutdown(wait=False)


def count_tokens(rows: list[EncodedRow]) -> int:
    """Tokens the rows hold (special tokens included, after truncation)."""
    return sum(len(row["input_ids"]) for row in rows)


def shape_of(lease: Lease) -> tuple[int, bool]:
    """What decides a task's tokenization: its max_length, and whether it needs offsets."""
    return lease.head.max_length, lease.head.wants_offsets


def check_inputs_fit(lease: Lease, inputs: list[Item]) -> None:
    """A task that takes single texts refuses pairs, and the reverse (patch metadata 'inputs');
    token and embedding tasks take single texts only."""
    head = lease.head
    if not head.takes_pairs:
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidRequest(
                    f"inputs[{i}] is a pair [text, text_pair], but task {lease.task!r} is a "
                    f'{head.kind} task, which takes single texts; send each input as "text"',
                    code="input_mismatch",
                )
        return
    wants = head.inputs
    if not wants:
        return
    for i, item in enumerate(inputs):
        is_pair = not isinstance(item, str)
        if is_pair != (wants == "text_pair"):
            sent = "a pair [text, text_pair]" if is_pair else "a single text"
            takes, shape = PAIR_SHAPES[wants]
            raise InvalidRequest(
                f"inputs[{i}] is {sent}, but task {lease.task!r} takes {takes}; "
                f"send each input as {shape}",
                code="input_mismatch",
            )
