"""The native protocol: decode a predict or fan-out body (already size-limited) into a checked
call, and the adapters that run it and encode the answer.

Parsed with orjson and checked by hand, not through pydantic: the predict route runs this for
every request, and each message says exactly which input is wrong and what to send.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ....patches.encoding import Item
from ...core.pipeline import Outcome, PredictPipeline, TaskCall
from ...errors import InvalidRequest, UnsupportedMediaType
from ...limits import Limits
from ..adapter import Adapter

PREDICT_SHAPE = '{"inputs": ["text" or ["text", "text_pair"], ...], "version": optional int}'
FIELDS = ("inputs", "version")
FANOUT_SHAPE = '{"tasks": ["task", ...], "inputs": ["text" or ["text", "text_pair"], ...]}'


@dataclass(frozen=True)
class PredictCall:
    """What a predict request asks of its task: its inputs and an optional pinned version."""

    asked: TaskCall


def check_json_type(content_type: str | None) -> None:
    """JSON bodies only (a missing Content-Type is read as JSON)."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type is {content_type!r}; send the body as JSON with "
            f"'Content-Type: application/json': {PREDICT_SHAPE}"
        )


def parse_json(body: bytes) -> object:
    """The body as JSON (UTF-8, no lone surrogates), or InvalidRequest saying what to send."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        reason = "not valid UTF-8" if "UTF-8" in str(err) else f"not valid JSON ({err})"
        raise InvalidRequest(f"the body is {reason}; send UTF-8 JSON: {PREDICT_SHAPE}") from None


def decode_predict(task: str, body: bytes, limits: Limits, key: str | None = None) -> PredictCall:
    """Checked inputs and version of a predict body for `task` (`key`: X-Bitpatch-Key)."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidRequest(f"the body must be a JSON object: {PREDICT_SHAPE}")
    extra = sorted(set(value) - set(FIELDS))
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; the body is {PREDICT_SHAPE}")
    inputs = check_inputs(value.get("inputs"), limits)
    return PredictCall(TaskCall(task, inputs, _version(value.get("version")), key=key))


@dataclass(frozen=True)
class FanoutCall:
    """What a fan-out request asks: every input through each of the tasks' active versions."""

    tasks: list[str]
    inputs: list[Item]
    key: str | None = None  # X-Bitpatch-Key: a rollout's split


def decode_fanout(body: bytes, limits: Limits, key: str | None = None) -> FanoutCall:
    """Checked tasks and inputs of a `POST /predict` body; tasks x inputs <= max_inputs."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidRequest(f"the body must be a JSON object: {FANOUT_SHAPE}")
    extra = sorted(set(value) - {"tasks", "inputs"})
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; the body is {FANOUT_SHAPE}")
    tasks = value.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        shown = orjson.dumps(tasks).decode()[:60]
        raise InvalidRequest(f"tasks must be a non-empty list of task names, got {shown}")
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise InvalidRequest(f"tasks lists {twice} more than once; name each task once")
    inputs = check_inputs(value.get("inputs"), limits, FANOUT_SHAPE)
    if len(tasks) * len(inputs) > limits.inputs:
        raise InvalidRequest(
            f"{len(tasks)} tasks x {len(inputs)} inputs = {len(tasks) * len(inputs)} rows, at "
            f"most {limits.inputs} per request (--max-inputs); split the request",
            code="too_many_inputs",
        )
    return FanoutCall(tasks, inputs, key)


def check_inputs(inputs: object, limits: Limits, shape: str = PREDICT_SHAPE) -> list[Item]:
    """Inputs as a non-empty list of texts and pairs within the request limits."""
    if not isinstance(inputs, list) or not inputs:
        shown = orjson.dumps(inputs).decode()[:60]
        raise InvalidRequest(f"inputs must be a non-empty list, got {shown}: {shape}")
    if len(inputs) > limits.inputs:
        raise InvalidRequest(
            f"{len(inputs)} inputs sent, at most {limits.inputs} per request (--max-inputs); "
            "split the request",
            code="too_many_inputs",
        )
    for i, item in enumerate(inputs):
        texts = [item] if isinstance(item, str) else item
        if not _is_item(item):
            shown = orjson.dumps(item).decode()[:80]
            raise InvalidRequest(
                f"inputs[{i}] must be a string or a pair [text, text_pair] of two strings; "
                f"got {shown}"
            )
        for j, text in enumerate(texts):
            if len(text) > limits.input_chars:
                where = f"inputs[{i}]" + (f"[{j}]" if len(texts) == 2 else "")
                raise InvalidRequest(
                    f"{where} has {len(text)} characters, at most {limits.input_chars} "
                    "(--max-input-chars); shorten it (the model reads only its first tokens)",
                    code="input_too_long",
                )
    return inputs


def _is_item(item: object) -> bool:
    if isinstance(item, str):
        return True
    return isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)


def _version(version: object) -> int | None:
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        shown = orjson.dumps(version).decode()[:40]
        raise InvalidRequest(f"version must be an integer >= 1 (or left out), got {shown}")
    return version


FANOUT_LABEL = "_fanout"  # fan-out requests share one metrics label


def encode_outcome(outcome: Outcome) -> dict:
    """One task's part of a response body."""
    return {"task": outcome.task, "version": outcome.version, "predictions": outcome.predictions}


@dataclass(frozen=True)
class NativeSource:
    """A native request as its route read it: the path's task (None: fan-out), the body,
    its Content-Type, and X-Bitpatch-Key (what a rollout splits by)."""

    task: str | None
    body: bytes
    content_type: str | None
    key: str | None


class PredictAdapter(Adapter[NativeSource, PredictCall, dict]):
    """`POST /tasks/{task}/predict`: one task's predictions."""

    api = "native"

    def decode(self, source: NativeSource, limits: Limits) -> PredictCall:
        check_json_type(source.content_type)
        return decode_predict(source.task, source.body, limits, source.key)

    def encode(self, call: PredictCall, outcome: Outcome) -> dict:
        return encode_outcome(outcome)


class FanoutAdapter(Adapter[NativeSource, FanoutCall, dict]):
    """`POST /predict`: every input through each named task, in shared forwards."""

    api = "native"

    def decode(self, source: NativeSource, limits: Limits) -> FanoutCall:
        check_json_type(source.content_type)
        return decode_fanout(source.body, limits, source.key)

    def label(self, call: FanoutCall) -> str:
        return FANOUT_LABEL

    async def run(self, pipeline: PredictPipeline, call: FanoutCall, terms) -> list[Outcome]:
        return await pipeline.fan_out(call.tasks, call.inputs, call.key, terms)

    def encode(self, call: FanoutCall, outcome: list[Outcome]) -> dict:
        return {"results": {o.task: encode_outcome(o) for o in outcome}}


PREDICT = PredictAdapter()
FANOUT = FanoutAdapter()
