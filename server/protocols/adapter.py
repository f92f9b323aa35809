"""The protocol seam: a protocol decodes its request into a call, the pipeline runs the task
the call asks for (`call.asked`), and the protocol encodes what came back. What a call asks of
its task (outputs, kind, dimensions) is checked on the leased version's head before any row is
queued."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from ..core.pipeline import NO_TERMS, Outcome, PredictPipeline, TaskCall, Terms
from ..limits import Limits
from ..metrics import RequestCount


class Call(Protocol):
    """A decoded, checked request: what it asks of its task."""

    asked: TaskCall


KEY_HEADER = "x-bitpatch-key"  # who asks: a rollout splits requests by it (HTTP and gRPC)
Source = TypeVar("Source")  # what the transport hands over: a body, a protobuf message
CallT = TypeVar("CallT")  # the decoded, checked request
Answer = TypeVar("Answer")  # what the transport sends back


class Adapter(ABC, Generic[Source, CallT, Answer]):
    """decode -> pipeline -> encode for one protocol; `api` names it in the request metrics."""

    api: ClassVar[str]

    @abstractmethod
    def decode(self, source: Source, limits: Limits) -> CallT:
        """The checked call of a request, or a domain error saying what to send."""

    @abstractmethod
    def encode(self, call: CallT, outcome) -> Answer:
        """The answer to the call."""

    def label(self, call: CallT) -> str:
        """The call's task as a metrics label."""
        return call.asked.task

    async def run(
        self, pipeline: PredictPipeline, call: CallT, terms: Terms
    ) -> Outcome | list[Outcome]:
        """The call through the pipeline's stages (lease, tokenize, batch, forward)."""
        return await pipeline.run(call.asked, terms)


async def serve(
    adapter: Adapter[Source, CallT, Answer],
    pipeline: PredictPipeline,
    source: Source,
    limits: Limits,
    count: RequestCount | None = None,
    terms: Terms = NO_TERMS,
) -> Answer:
    """One request through a protocol: decode, run, encode (`count` learns the task label;
    `terms`: the transport's deadline)."""
    call = adapter.decode(source, limits)
    if count is not None:
        count.task = adapter.label(call)
    return adapter.encode(call, await adapter.run(pipeline, call, terms))
