"""The native API as a protocol adapter: a predict body (one task) or a fan-out body (many)
in, the predictions of each task out."""

from __future__ import annotations

from ...core.pipeline import Outcome, PredictPipeline
from ...limits import Limits
from ..adapter import Adapter, TaskCall
from .request import FanoutCall, PredictCall, decode_fanout, decode_predict

FANOUT_LABEL = "_fanout"  # fan-out requests share one metrics label


def encode_outcome(outcome: Outcome) -> dict:
    """One task's part of a response body."""
    return {"task": outcome.task, "version": outcome.version, "predictions": outcome.predictions}


class PredictAdapter(Adapter[tuple[str, bytes], tuple[str, PredictCall], dict]):
    """`POST /tasks/{task}/predict`: (task, body) -> one task's predictions."""

    api = "native"

    def decode(self, source: tuple[str, bytes], limits: Limits) -> tuple[str, PredictCall]:
        task, body = source
        return task, decode_predict(body, limits)

    def task_call(self, call: tuple[str, PredictCall]) -> TaskCall:
        task, predict = call
        return TaskCall(task, predict.inputs, predict.version)

    def encode(self, call: tuple[str, PredictCall], outcome: Outcome) -> dict:
        return encode_outcome(outcome)


class FanoutAdapter(Adapter[bytes, FanoutCall, dict]):
    """`POST /predict`: every input through each named task, in shared forwards."""

    api = "native"

    def decode(self, source: bytes, limits: Limits) -> FanoutCall:
        return decode_fanout(source, limits)

    def task_call(self, call: FanoutCall) -> TaskCall:
        raise TypeError("a fan-out call asks many tasks; run() serves it")

    def label(self, call: FanoutCall) -> str:
        return FANOUT_LABEL

    async def run(self, pipeline: PredictPipeline, call: FanoutCall) -> list[Outcome]:
        return await pipeline.fan_out(call.tasks, call.inputs)

    def encode(self, call: FanoutCall, outcome: list[Outcome]) -> dict:
        return {"results": {o.task: encode_outcome(o) for o in outcome}}


PREDICT = PredictAdapter()
FANOUT = FanoutAdapter()
