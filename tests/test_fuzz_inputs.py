"""Generated inputs against a real server: malformed v2 gRPC ModelInfer requests (shapes,
datatypes, raw contents of wrong lengths, huge declared shapes, missing fields, bytes that are
no message at all) and malformed patch uploads (truncated files, header length claims up to
2^63, overlapping offsets, wrong dtypes, NaN/inf, duplicate names, huge metadata). Every
answer is a client error (never INTERNAL/UNKNOWN, never a 5xx, never a hang), the server's
memory stays bounded, and what was stored before is still served."""

from __future__ import annotations

import json
import os
import struct

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitpatch.server.protocols.v2.grpc_messages import SERVICE, method_types
from bitpatch.testing import ServerProcess, free_port

from tiny import make_model, random_patch

EXAMPLES = int(os.environ.get("BITPATCH_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
RSS_GROWTH_MB = 256  # what generated requests may add to the server's memory at most


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    grpc_port = free_port()
    store = tmp_path_factory.mktemp("fuzz-inputs") / "store"
    flags = ("--no-demo-patches", "--grpc-port", str(grpc_port), "--max-inputs", "8")
    with ServerProcess(tiny_bert_dir, store, *flags) as srv:
        model = make_model("bert")[0]
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            for task, labels in (("cls", 2), ("reg", 1)):
                data = random_patch(model, task, labels, "mean", seed=labels).to_bytes()
                assert http.put(f"/tasks/{task}/patch", content=data).status_code == 201
            http.post("/tasks/cls/predict", json={"inputs": ["warm up"]}).raise_for_status()
            srv.grpc_address = f"127.0.0.1:{grpc_port}"
            srv.rss_before = srv.rss_mb()
            yield srv
            assert srv.rss_mb() - srv.rss_before < RSS_GROWTH_MB
            reply = http.post("/tasks/cls/predict", json={"inputs": ["still serving"]})
            assert reply.status_code == 200 and reply.json()["version"] == 1


@pytest.fixture(scope="module")
def infer(server):
    """Send a ModelInfer request (a message, or raw bytes) and give back the status code."""
    channel = grpc.insecure_channel(server.grpc_address)
    call = channel.unary_unary(
        f"/{SERVICE}/ModelInfer",
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=lambda data: data,
    )

    def send(request) -> grpc.StatusCode:
        try:
            call(request, timeout=30)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    yield send
    channel.close()


Request = method_types("ModelInfer")[0]
NAMES = st.sampled_from(["text", "text_pair", "x", ""]) | st.text(max_size=8)
DATATYPES = st.sampled_from(["BYTES", "FP32", "INT64", "BOOL", ""]) | st.text(max_size=6)
DIMS = st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 4)
ELEMENT = st.builds(
    lambda n, tail: struct.pack("<I", n) + tail, st.integers(0, 2**32 - 1), st.binary(max_size=24)
)  # a BYTES element whose length prefix may lie
RAW = st.lists(ELEMENT, max_size=4).map(b"".join) | st.binary(max_size=64)
TENSOR = st.fixed_dictionaries(
    {
        "name": NAMES,
        "datatype": DATATYPES,
        "shape": st.lists(DIMS, max_size=4),
        "texts": st.lists(st.binary(max_size=40), max_size=5),
    }
)
REQUEST = st.fixed_dictionaries(
    {
        "model_name": st.sampled_from(["cls", "reg", "nope", ""]) | st.text(max_size=70),
        "model_version": st.sampled_from(["", "1", "2", "-1", "99999999999999999999"])
        | st.text(max_size=6),
        "inputs": st.lists(TENSOR, max_size=3),
        "raw": st.none() | st.lists(RAW, max_size=3),
        "outputs": st.lists(st.tuples(NAMES, st.booleans()), max_size=3),
    }
)


def build(fields: dict):
    """A ModelInferRequest from generated fields."""
    request = Request(model_name=fields["model_name"], model_version=fields["model_version"])
    for tensor in fields["inputs"]:
        added = request.inputs.add(
            name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
        )
        if fields["raw"] is None:
            added.contents.bytes_contents.extend(tensor["texts"])
    for raw in fields["raw"] or ():
        request.raw_input_contents.append(raw)
    for name, classification in fields["outputs"]:
        output = request.outputs.add(name=name)
        if classification:
            output.parameters["classification"].int64_param = 2
    return request


@FUZZ
@given(fields=REQUEST)
def test_generated_model_infer_requests_get_client_errors(infer, fields):
    code = infer(build(fields))
    assert code not in SERVER_ERRORS and code != grpc.StatusCode.DEADLINE_EXCEEDED, fields


@FUZZ
@given(data=st.binary(max_size=256))
def test_bytes_that_are_no_message_get_client_errors(infer, data):
    code = infer(data)
    assert code not in SERVER_ERRORS and code != grpc.StatusCode.DEADLINE_EXCEEDED, data


@pytest.fixture(scope="module")
def patch_parts():
    """A valid patch file of task `up`, split into its header (a dict) and its data bytes."""
    data = random_patch(make_model("bert")[0], "up", 2, "mean", seed=9).to_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :], data


def framed(header: dict | str, body: bytes) -> bytes:
    """A safetensors file from a header (dict, or JSON text as written) and its data."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text)) + text + body


def mutate_header(header: dict, draw) -> dict | str:
    """One generated change to a tensor's entry or to the metadata."""
    header = json.loads(json.dumps(header))
    names = [k for k in header if k != "__metadata__"]
    name = draw(st.sampled_from(names))
    change = draw(st.sampled_from(["dtype", "shape", "offsets", "metadata", "duplicate", "drop"]))
    if change == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(["F64", "I64", "U8", "BOOL", "XX", "F16"]))
    elif change == "shape":
        header[name]["shape"] = draw(st.lists(DIMS, max_size=3))
    elif change == "offsets":
        header[name]["data_offsets"] = draw(st.lists(DIMS, min_size=0, max_size=3))
    elif change == "metadata":
        key = draw(st.sampled_from(["task", "kind", "labels", "pooling", "max_length", "x"]))
        value = draw(st.text(max_size=20) | st.just("x" * 200_000) | st.just("[" * 50_000))
        header["__metadata__"][key] = value
    elif change == "duplicate":  # the same tensor named twice, as JSON text
        text = json.dumps(header)
        entry = json.dumps({name: header[name]})[1:-1]
        return text[:-1] + ", " + entry + "}"
    else:
        del header[name]
    return header


@st.composite
def uploads(draw, parts):
    """Generated patch files around a valid one."""
    header, body, whole = parts
    kind = draw(st.sampled_from(["truncated", "length", "header", "values", "bytes"]))
    if kind == "truncated":
        return whole[: draw(st.integers(0, len(whole) - 1))]
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2**63))) + whole[8:]
    if kind == "header":
        return framed(mutate_header(header, draw), body)
    if kind == "values":  # NaN or inf into the tensor data
        at = draw(st.integers(0, max(0, len(body) - 4))) // 4 * 4
        value = struct.pack("<f", draw(st.sampled_from([float("nan"), float("inf"), -1e38])))
        return framed(header, body[:at] + value + body[at + 4 :])
    return draw(st.binary(max_size=512))


def test_generated_uploads_get_client_errors(server, patch_parts):
    before = httpx.get(f"{server.url}/tasks/cls", timeout=30).json()

    @FUZZ
    @given(data=uploads(patch_parts))
    def upload(data):
        reply = httpx.put(f"{server.url}/tasks/up/patch", content=data, timeout=60)
        assert reply.status_code < 500, reply.text
        if reply.status_code >= 400:
            assert reply.json()["error"]["message"], reply.text

    upload()
    assert httpx.get(f"{server.url}/tasks/cls", timeout=30).json() == before
