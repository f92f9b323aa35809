"""OpenAI's embeddings API in bitpatch's terms: decode a `POST /v1/embeddings` body, check the
task is an embedding task, and encode the answer (float lists or base64 float32)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import orjson

from ....patches.engine import TaskHead
from ...errors import InvalidRequest
from ..native.request import check_inputs, parse_json
from ..v2.model import output_width

FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
SHAPE = '{"model": "<embedding task>", "input": "text" or ["text", ...]}'
FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsCall:
    """What an embeddings request asks."""

    model: str
    texts: list[str]
    encoding_format: str
    dimensions: int | None


def decode_embeddings(body: bytes, max_inputs: int, max_chars: int) -> EmbeddingsCall:
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
        check_inputs(texts, max_inputs, max_chars, SHAPE)
    except InvalidRequest as err:
        raise InvalidRequest(err.message, err.code, param="input") from None
    return EmbeddingsCall(model, texts, fmt, dimensions)


def check_embedding_task(call: EmbeddingsCall, head: TaskHead, hidden_size: int) -> None:
    """The task makes embeddings, of the dimensions asked (if asked)."""
    if head.kind != "embedding":
        raise InvalidRequest(
            f"model {call.model!r} is a {head.kind} task; /v1/embeddings serves tasks of kind "
            "'embedding' (GET /v1/models lists the tasks; POST /tasks/{task}/predict serves "
            "every kind)",
            code="wrong_task_kind",
            param="model",
        )
    width = output_width(head, hidden_size)
    if call.dimensions is not None and call.dimensions != width:
        raise InvalidRequest(
            f"dimensions is {call.dimensions}, but model {call.model!r} makes {width}-dimensional "
            "embeddings and cannot shorten them; leave dimensions out or send "
            f"{width}",
            code="unsupported_dimensions",
            param="dimensions",
        )


def encode_embeddings(call: EmbeddingsCall, predictions: list[dict], tokens: int) -> bytes:
    """The OpenAI response body."""
    data = [
        {"object": "embedding", "index": i, "embedding": vector(p["embedding"], call)}
        for i, p in enumerate(predictions)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": call.model, "usage": usage})


def vector(values: list[float], call: EmbeddingsCall) -> list[float] | str:
    """One embedding as floats, or base64 of its little-endian float32 bytes."""
    if call.encoding_format == "float":
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()
