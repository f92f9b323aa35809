"""Decoding predict bodies: every malformed shape names what is wrong."""

from __future__ import annotations

import orjson
import pytest

from bitpatch.server.errors import InvalidRequest, UnsupportedMediaType
from bitpatch.server.http.schemas import PredictRequest
from bitpatch.server.limits import BodyLimit, Limits
from bitpatch.server.protocols.native.request import check_json_type, decode_predict

LIMITS = Limits(4, 10, BodyLimit(1 << 20, "--max-request-bytes"), BodyLimit(1 << 20, "--x"))


def decode(value, raw: bytes | None = None):
    return decode_predict("t", raw if raw is not None else orjson.dumps(value), LIMITS).asked


def test_valid_bodies():
    call = decode({"inputs": ["a", ["b", "c"]], "version": 2})
    assert call.inputs == ["a", ["b", "c"]] and call.version == 2
    assert decode({"inputs": ["a"]}).version is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"inputs": "text"}, "non-empty list"),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": ["a"] * 5}, "at most 4"),
        ({"inputs": [1]}, "inputs[0]"),
        ({"inputs": ["a", ["b"]]}, "inputs[1]"),
        ({"inputs": [["a", 2]]}, "pair"),
        ({"inputs": ["a" * 11]}, "at most 10"),
        ({"inputs": [["a", "b" * 11]]}, "inputs[0][1]"),
        ({"inputs": ["a"], "version": True}, "version"),
        ({"inputs": ["a"], "version": 0}, "version"),
        ({"inputs": ["a"], "version": "1"}, "version"),
        ({"inputs": ["a"], "extra": 1}, "extra"),
    ],
)
def test_malformed_bodies(body, words):
    with pytest.raises(InvalidRequest, match=words.replace("[", r"\[").replace("]", r"\]")):
        decode(body)


@pytest.mark.parametrize(
    ("raw", "words"),
    [(b"{not json", "not valid JSON"), (b'{"inputs": ["\xff"]}', "UTF-8"), (b"", "JSON")],
)
def test_undecodable_bytes(raw, words):
    with pytest.raises(InvalidRequest, match=words):
        decode(None, raw)


def test_lone_surrogate_escape_is_refused():
    with pytest.raises(InvalidRequest, match="JSON"):
        decode(None, b'{"inputs": ["\\ud800 x"]}')


def test_content_types():
    check_json_type(None)
    check_json_type("application/json; charset=utf-8")
    check_json_type("application/problem+json")
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        check_json_type("text/plain")


def test_openapi_model_agrees_on_valid_and_invalid_shapes():
    PredictRequest.model_validate({"inputs": ["a", ["b", "c"]], "version": 1})
    for bad in ({"inputs": []}, {"inputs": [["a"]]}, {"inputs": ["a"], "version": True}):
        with pytest.raises(ValueError):
            PredictRequest.model_validate(bad)
