"""OpenAI's embeddings API in bitpatch's terms: decode a `POST /v1/embeddings` body, check the
task is an embedding task, and encode the answer (float lists or base64 float32)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson

from ....patches.engine import TaskHead
from ....patches.kinds import EMBEDDING
from ...core.pipeline import Outcome, TaskCall
from ...errors import InvalidRequest
from ...limits import Limits
from ..adapter import Adapter
from ..native.request import check_inputs, parse_json

FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
SHAPE = '{"model": "<embedding task>", "input": "text" or ["text", ...]}'
FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsCall:
    """What an embeddings request asks; its task call checks the task's kind and width."""

    model: str
    encoding_format: str
    asked: TaskCall


def decode_embeddings(
    body: bytes, limits: Limits, hidden_size: int, key: str | None = None
) -> EmbeddingsCall:
    """The checked request of a `POST /v1/embeddings` body."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidRequest(f"the body must be a JSON object: {SHAPE}")
    extra = sorted(set(value) - FIELDS)
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; the body is {SHAPE}", param=extra[0])
    model = value.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"model must be the name of an embedding task: {SHAPE}", param="model")
    texts = value.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            "input must be a string or a list of strings (token-id arrays are not read: send "
            f"the text): {SHAPE}",
            param="input",
        )
    fmt = value.get("encoding_format") or "float"
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"encoding_format must be one of {FORMATS}, got {fmt!r}", param="encoding_format"
        )
    dimensions = value.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise InvalidRequest("dimensions must be an integer", param="dimensions")
    try:
        check_inputs(texts, limits, SHAPE)
    except InvalidRequest as err:
        raise InvalidRequest(err.message, err.code, param="input") from None
    check = partial(check_embedding_task, model, dimensions, hidden_size=hidden_size)
    return EmbeddingsCall(model, fmt, TaskCall(model, texts, None, check, key))


def check_embedding_task(
    model: str, dimensions: int | None, head: TaskHead, hidden_size: int
) -> None:
    """The task makes embeddings, of the dimensions asked (if asked)."""
    if head.kind is not EMBEDDING:
        raise InvalidRequest(
            f"model {model!r} is a {head.kind} task; /v1/embeddings serves tasks of kind "
            "'embedding' (GET /v1/models lists the tasks; POST /tasks/{task}/predict serves "
            "every kind)",
            code="wrong_task_kind",
            param="model",
        )
    width = head.kind.output_width(head, hidden_size)
    if dimensions is not None and dimensions != width:
        raise InvalidRequest(
            f"dimensions is {dimensions}, but model {model!r} makes {width}-dimensional "
            "embeddings and cannot shorten them; leave dimensions out or send "
            f"{width}",
            code="unsupported_dimensions",
            param="dimensions",
        )


class EmbeddingsAdapter(Adapter[tuple[bytes, str | None], EmbeddingsCall, bytes]):
    """`POST /v1/embeddings`: the body in, OpenAI's embeddings answer out; the task's kind and
    dimensions are checked on the leased head, before its rows are queued."""

    api = "openai"

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size

    def decode(self, source: tuple[bytes, str | None], limits: Limits) -> EmbeddingsCall:
        body, key = source  # key: X-Bitpatch-Key
        return decode_embeddings(body, limits, self.hidden_size, key)

    def encode(self, call: EmbeddingsCall, outcome: Outcome) -> bytes:
        return encode_embeddings(call, outcome)


def encode_embeddings(call: EmbeddingsCall, outcome: Outcome) -> bytes:
    """The OpenAI response body."""
    data = [
        {"object": "embedding", "index": i, "embedding": vector(p["embedding"], call)}
        for i, p in enumerate(outcome.predictions)
    ]
    tokens = outcome.tokens
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": call.model, "usage": usage})


def vector(values: list[float], call: EmbeddingsCall) -> list[float] | str:
    """One embedding as floats, or base64 of its little-endian float32 bytes."""
    if call.encoding_format == "float":
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()
