"""The protocol seam: a protocol decodes its request into a call, the pipeline runs the call's
task (or tasks), and the protocol encodes what came back. What a call asks of a task (outputs,
kind, dimensions) is checked on the leased version's head before any row is queued."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from ...patches.encoding import Item
from ..core.pipeline import HeadCheck, Outcome, PredictPipeline
from ..limits import Limits
from ..metrics import RequestCount

Source = TypeVar("Source")  # what the transport hands over: a body, a protobuf message
Call = TypeVar("Call")  # the decoded, checked request
Answer = TypeVar("Answer")  # what the transport sends back


@dataclass(frozen=True)
class TaskCall:
    """One task's share of a call: its inputs, the version asked for, and the head check."""

    task: str
    inputs: list[Item]
    version: int | None = None
    check: HeadCheck = None


class Adapter(ABC, Generic[Source, Call, Answer]):
    """decode -> pipeline -> encode for one protocol; `api` names it in the request metrics."""

    api: ClassVar[str]

    @abstractmethod
    def decode(self, source: Source, limits: Limits) -> Call:
        """The checked call of a request, or a domain error saying what to send."""

    @abstractmethod
    def task_call(self, call: Call) -> TaskCall:
        """What the call asks of its task."""

    @abstractmethod
    def encode(self, call: Call, outcome) -> Answer:
        """The answer to the call."""

    def label(self, call: Call) -> str:
        """The call's task as a metrics label."""
        return self.task_call(call).task

    async def run(self, pipeline: PredictPipeline, call: Call) -> Outcome | list[Outcome]:
        """The call through the pipeline's stages (lease, tokenize, batch, forward)."""
        asked = self.task_call(call)
        return await pipeline.run(asked.task, asked.inputs, asked.version, asked.check)


async def serve(
    adapter: Adapter[Source, Call, Answer],
    pipeline: PredictPipeline,
    source: Source,
    limits: Limits,
    count: RequestCount | None = None,
) -> Answer:
    """One request through a protocol: decode, run, encode (`count` learns the task label)."""
    call = adapter.decode(source, limits)
    if count is not None:
        count.task = adapter.label(call)
    return adapter.encode(call, await adapter.run(pipeline, call))
