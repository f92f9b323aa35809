"""The predict path after decoding, as named stages: lease -> tokenize -> batch -> (forward, on
the inference workers) -> encode. One object owns the whole saga, so a failure at any stage
gives back exactly what the earlier stages took."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import orjson

from ...patches.encoding import EncodedRow, Item
from ...patches.engine import TaskHead
from ...patches.row_encoder import RowEncoder
from ...patches.tuning import name_os_thread
from ..errors import InvalidRequest, Overloaded, TaskQueueFull
from ..tenants import EVERYONE, Caller
from .batcher import Batcher
from .registry import Lease, Registry, unknown_task
from .scheduling import Flow
from .watch import RolloutWatch

log = logging.getLogger(__name__)
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
    key: str | None = None  # who asks (X-Bitpatch-Key): a rollout's split is by key

    def route_key(self) -> str:
        """The key a rollout splits by: the caller's, else the request's inputs."""
        return routing_key(self.key, self.inputs)


@dataclass(frozen=True)
class Terms:
    """What the transport says of a request beyond its body: by when (time.monotonic()) its
    rows must start their forward (None: no deadline), and who sent it (its token's scope and
    quota)."""

    deadline: float | None = None
    caller: Caller = EVERYONE

    def admit(self, tasks: list[str], rows: int) -> None:
        """Tasks outside the caller's scope are unknown to it; its quota pays for the rows."""
        for task in tasks:
            if not self.caller.sees(task):
                raise unknown_task(task)
        self.caller.spend(rows * len(tasks))

    def flow(self, task: str) -> Flow:
        """Whose fair share the rows for `task` count toward."""
        return self.caller.flow(task)


NO_TERMS = Terms()


@dataclass(frozen=True)
class Outcome:
    """What one task computed for a call's inputs: the version and head used, the predictions
    in input order, and the tokens read (special tokens included, after truncation)."""

    task: str
    version: int
    head: TaskHead
    predictions: list[dict]
    tokens: int
    routed: bool = False  # the version was chosen by the task's live rollout


class PredictPipeline:
    """Runs predict calls through the registry, the tokenizer pool and the batcher."""

    def __init__(self, registry: Registry, batcher: Batcher, tokenize_threads: int = 2):
        self.registry, self.batcher = registry, batcher
        self.watch = RolloutWatch(registry, batcher.metrics)
        self._shadows: set[asyncio.Task] = set()  # comparisons in flight (kept referenced)
        self.encoder = RowEncoder(registry.engine.backbone.tokenizer)
        self.tokenize_pool = ThreadPoolExecutor(
            tokenize_threads,
            thread_name_prefix="tokenize",
            initializer=name_os_thread,
            initargs=("bp-tokenize",),
        )

    async def run(self, asked: TaskCall, terms: Terms = NO_TERMS) -> Outcome:
        """The inputs through one task version (pinned, else the one the task's rollout routes
        the call to); the call's check sees the leased version's head before any row is
        queued (what a protocol's request asks of the task). A shadowed call's rows also run
        through the shadow version in the same forward, compared once both are computed."""
        inputs = asked.inputs
        terms.admit([asked.task], len(inputs))
        lease = await self.lease(asked.task, asked.version, asked.route_key)
        try:
            if asked.check is not None:
                asked.check(lease.head)
            check_inputs_fit(lease, inputs)
            self.batcher.admit(len(inputs), lease.task, terms.deadline, terms.flow(lease.task))
        except BaseException:
            self.registry.release(lease)
            raise
        shadow = lease.shadow
        shadow_lease = self.shadow_lease(asked.task, shadow, len(inputs)) if shadow else None
        try:
            rows = await self.tokenize(lease, inputs)
        except BaseException:
            self.batcher.withdraw(len(inputs), lease.task)
            self.registry.release(lease)
            if shadow_lease is not None:
                self.batcher.withdraw(len(inputs), lease.task)
                self.registry.release(shadow_lease)
            raise
        # the batcher gives the lease back once the rows are computed, even if this request
        # is cancelled meanwhile (its rows may already be in a forward)
        release = lambda: self.registry.release(lease)  # noqa: E731
        flow = terms.flow(lease.task)
        done = self.batcher.submit(lease, rows, release, deadline=terms.deadline, flow=flow)
        if shadow_lease is not None:
            self.shadow(shadow_lease, lease, inputs, rows, done)
        predictions = await done
        if lease.routed:
            self.watch.served(asked.task, lease.version)
        tokens = count_tokens(rows)
        return Outcome(asked.task, lease.version, lease.head, predictions, tokens, lease.routed)

    def shadow_lease(self, task: str, version: int, n_rows: int) -> Lease | None:
        """A lease on the shadow version with room for its rows, or None (counted): a shadow
        never waits for a load and never fills the queue."""
        lease = self.registry.lease(task, version)
        if lease is None:  # stored, not resident: load it for the next shadowed request
            self.batcher.metrics.shadow_dropped.labels("not_resident").inc()
            self._keep(asyncio.to_thread(self.registry.make_resident, task, version))
            return None
        try:
            self.batcher.admit(n_rows, task)
        except (Overloaded, TaskQueueFull):
            self.batcher.metrics.shadow_dropped.labels("queue_full").inc()
            self.registry.release(lease)
            return None
        return lease

    def shadow(self, lease: Lease, served: Lease, inputs, rows, done: asyncio.Future) -> None:
        """Queue the shadow rows beside the served ones; compare once both are computed."""
        if shape_of(lease) != shape_of(served):
            rows = self.encoder.encode(inputs, lease.head.max_length, lease.head.wants_offsets)
        release = lambda: self.registry.release(lease)  # noqa: E731
        shadowed = self.batcher.submit(lease, rows, on_done=release, shadow=True)
        self._keep(self.watch.compare(served, lease, done, shadowed))

    def _keep(self, work) -> None:
        """Run a background coroutine, logging its failure."""
        task = asyncio.ensure_future(work)
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def fan_out(
        self, tasks: list[str], inputs: list[Item], key: str | None = None, terms=NO_TERMS
    ):
        """Every input through each task's active version (or the one its rollout routes the
        key to), all rows batched together."""
        route_key = partial(routing_key, key, inputs)
        wanted = [(t, None) for t in tasks]
        outcomes = await self.run_all(wanted, inputs, route_key=route_key, terms=terms)
        for outcome in outcomes:
            if outcome.routed:
                self.watch.served(outcome.task, outcome.version)
        return outcomes

    async def evaluate(self, task: str, inputs: list[Item], check: HeadCheck) -> list[Outcome]:
        """The inputs through the task's active version and its rollout's canary and shadow,
        in shared forwards; `check` sees each version's head first (the labels fit)."""
        versions = self.registry.compared_versions(task)
        return await self.run_all([(task, v) for v in versions], inputs, check)

    async def run_all(
        self,
        wanted: list[tuple[str, int | None]],
        inputs: list[Item],
        check: HeadCheck = None,
        route_key: Callable[[], str] | None = None,
        terms: Terms = NO_TERMS,
    ) -> list[Outcome]:
        """Every input through each (task, version; None: as the task's rollout routes
        `route_key`), all rows batched together; every version is leased and checked before
        any work, so a bad one fails the call at once."""
        terms.admit([task for task, _ in wanted], len(inputs))
        leases = await self.lease_all(wanted, inputs, check, route_key)
        admitted: list[Lease] = []
        try:
            for lease in leases:
                flow = terms.flow(lease.task)
                self.batcher.admit(len(inputs), lease.task, terms.deadline, flow)
                admitted.append(lease)
            rows = await self.tokenize_once(leases, inputs)
        except BaseException:
            for lease in admitted:
                self.batcher.withdraw(len(inputs), lease.task)
            for lease in leases:
                self.registry.release(lease)
            raise
        done = [
            self.batcher.submit(
                lease,
                rows[shape_of(lease)],
                partial(self.registry.release, lease),
                deadline=terms.deadline,
                flow=terms.flow(lease.task),
            )
            for lease in leases
        ]
        predictions = await asyncio.gather(*done)
        return [
            Outcome(
                lease.task,
                lease.version,
                lease.head,
                found,
                count_tokens(rows[shape_of(lease)]),
                lease.routed,
            )
            for lease, found in zip(leases, predictions, strict=True)
        ]

    async def lease_all(
        self,
        wanted: list[tuple[str, int | None]],
        inputs: list[Item],
        check: HeadCheck,
        route_key: Callable[[], str] | None = None,
    ) -> list[Lease]:
        """A lease on each (task, version), its inputs checked; all or none."""
        leases: list[Lease] = []
        try:
            for task, version in wanted:
                leases.append(await self.lease(task, version, route_key))
                if check is not None:
                    check(leases[-1].head)
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

    async def lease(
        self, task: str, version: int | None, route_key: Callable[[], str] | None = None
    ) -> Lease:
        """Pin the version (None: the one the task's rollout routes `route_key` to, else the
        active one); one that is stored but not resident is loaded off the event loop."""
        for _ in range(LEASE_TRIES):
            lease = self.registry.lease(task, version, route_key)
            if lease is not None:
                return lease
            wanted = version if version is not None else self.registry.route(task, route_key)[0]
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


def routing_key(key: str | None, inputs: list[Item]) -> str:
    """What a rollout splits a request by: its X-Bitpatch-Key, else its inputs."""
    return key if key is not None else orjson.dumps(inputs).decode()


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
