"""The v2 tensor codec: BYTES elements, binary bodies, compression limits, response framing."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import orjson
import pytest

from bitpatch.server.errors import BodyTooLarge, InvalidRequest
from bitpatch.server.limits import BodyLimit
from bitpatch.server.protocols.v2.tensors import (
    OutputTensor,
    decompress,
    encode_response,
    pack_bytes,
    read_inputs,
    split_body,
    unpack_bytes,
)


def test_bytes_elements_round_trip_including_empty_and_utf8():
    elements = [b"", "naïve café".encode(), b"x" * 300]
    raw = pack_bytes(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and unpack_bytes(raw, "text") == elements
    with pytest.raises(InvalidRequest, match="4-byte length"):
        unpack_bytes(raw + b"\x01", "text")


def test_json_data_may_be_nested_and_binary_data_is_sliced_in_order():
    text = {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}
    pair = {"name": "text_pair", "datatype": "BYTES", "shape": [2]}
    raw = pack_bytes([b"p", b""])
    pair["parameters"] = {"binary_data_size": len(raw)}
    tensors = read_inputs([text, pair], raw)
    assert [t.elements for t in tensors] == [[b"a", b"b"], [b"p", b""]]
    with pytest.raises(InvalidRequest, match="shape \\[3\\]"):
        read_inputs([{**text, "shape": [3]}], b"")


def test_the_header_length_must_fit_the_body():
    header = orjson.dumps({"inputs": []})
    assert split_body(header + b"tail", str(len(header))) == ({"inputs": []}, b"tail")
    for bad in ("-1", "abc", str(len(header) + 10)):
        with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
            split_body(header, bad)


LIMIT = BodyLimit(100, "--max-request-bytes")


def test_compressed_bodies_are_inflated_within_the_limit():
    body = b'{"inputs": []}'
    assert decompress(gzip.compress(body), "gzip", LIMIT) == body
    assert decompress(zlib.compress(body), "deflate", LIMIT) == body
    with pytest.raises(BodyTooLarge):
        decompress(gzip.compress(b"0" * 1000), "gzip", LIMIT)
    with pytest.raises(InvalidRequest, match="br"):
        decompress(body, "br", LIMIT)
    with pytest.raises(InvalidRequest, match="not valid gzip"):
        decompress(body, "gzip", LIMIT)


def test_responses_put_binary_outputs_after_the_header():
    label = OutputTensor("label", "BYTES", (2,), [b"yes", b"no"])
    scores = OutputTensor("scores", "FP32", (2, 2), [0.25, 0.75, 0.5, 0.5])
    body, length = encode_response({"model_name": "m"}, [label, scores], {"scores"})
    header = orjson.loads(body[:length])
    assert header["outputs"][0]["data"] == ["yes", "no"]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), scores.elements)
    body, length = encode_response({"model_name": "m"}, [label], set())
    assert length is None and orjson.loads(body)["outputs"][0]["shape"] == [2]
