"""The v2 gRPC service against a real server, through the unmodified tritonclient.grpc: every
answer equals the native predict; the service's messages are wire-compatible with Triton's."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from bitpatch.server.protocols.v2.grpc_messages import METHODS, POOL, SERVICE, method_types

from protocols import PREDICT, TEXTS, ProtocolServer, auth, grpc_auth


@pytest.fixture(scope="module")
def server(protocol_server) -> ProtocolServer:
    return protocol_server


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.grpc_address) as c:
        yield c


def text_input(name: str, texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return tensor


def infer(client, task, inputs, outputs=(), version=""):
    wanted = [triton.InferRequestedOutput(o) for o in outputs] or None
    return client.infer(task, inputs, version, wanted, headers=grpc_auth())


def scores_of(server, task, native, version=""):
    meta = server.http.get(
        f"/v2/models/{task}" + (f"/versions/{version}" if version else ""), headers=auth()
    ).json()
    return [[p["scores"][label] for label in meta["parameters"]["labels"]] for p in native]


def test_messages_match_tritons_field_for_field():
    service = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ours = POOL.FindServiceByName(SERVICE)
    for method in METHODS:
        theirs = service.methods_by_name[method]
        mine = ours.methods_by_name[method]
        assert mine.input_type.full_name == theirs.input_type.full_name
        assert mine.output_type.full_name == theirs.output_type.full_name
        compare(mine.input_type, theirs.input_type)
        compare(mine.output_type, theirs.output_type)


def compare(mine, theirs) -> None:
    """Every field of `theirs` is in `mine` with the same number, type and cardinality."""
    for field in theirs.fields:
        own = mine.fields_by_name[field.name]
        assert (own.number, own.type, own.is_repeated) == (
            field.number,
            field.type,
            field.is_repeated,
        ), f"{theirs.full_name}.{field.name}"
        if field.message_type is not None:
            compare(own.message_type, field.message_type)


def test_server_live_ready_metadata_and_index(client, server):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "bitpatch" and "binary_tensor_data" in meta.extensions
    assert client.is_model_ready("cls", headers=grpc_auth())
    assert client.is_model_ready("cls", "1", headers=grpc_auth())
    index = client.get_model_repository_index(headers=grpc_auth())
    rest = server.http.post("/v2/repository/index", headers=auth()).json()
    assert [(m.name, m.version, m.state) for m in index.models] == [
        (m["name"], m["version"], m["state"]) for m in rest
    ]


def test_repository_index_pages_through_metadata(server):
    import grpc

    from bitpatch.server.protocols.v2.grpc_messages import SERVICE, method_types

    request_type, reply_type = method_types("RepositoryIndex")
    rest = server.http.post("/v2/repository/index", headers=auth()).json()
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/RepositoryIndex",
            request_serializer=request_type.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        seen, after = [], ""
        while True:
            metadata = (*grpc_auth().items(), ("bitpatch-limit", "2"), ("bitpatch-after", after))
            reply, info = call.with_call(request_type(), metadata=metadata)
            trailing = dict(info.trailing_metadata())
            assert len(reply.models) <= 2 and trailing["bitpatch-total"] == str(len(rest))
            seen += [m.name for m in reply.models]
            if "bitpatch-next" not in trailing:
                break
            after = trailing["bitpatch-next"]
        assert seen == [m["name"] for m in rest]
        with pytest.raises(grpc.RpcError) as refused:
            call(request_type(), metadata=(*grpc_auth().items(), ("bitpatch-limit", "0")))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_metadata_equals_rest(client, server):
    for task, version in (("cls", ""), ("cls", "1"), ("embed", ""), ("reg", "")):
        got = client.get_model_metadata(task, version, headers=grpc_auth(), as_json=True)
        path = f"/v2/models/{task}" + (f"/versions/{version}" if version else "")
        rest = server.http.get(path, headers=auth()).json()
        assert got["versions"] == rest["versions"] and got["platform"] == "bitpatch"
        for field in ("inputs", "outputs"):
            assert [
                (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got[field]
            ] == [(t["name"], t["datatype"], t["shape"]) for t in rest[field]]


def test_metadata_parameters_carry_kind_and_labels(server):
    request_type, response_type = method_types("ModelMetadata")
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelMetadata",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        reply = call(request_type(name="cls"), metadata=[("authorization", f"Bearer {PREDICT}")])
    rest = server.http.get("/v2/models/cls", headers=auth()).json()["parameters"]
    assert reply.parameters["kind"].string_param == "classification"
    assert json.loads(reply.parameters["labels"].string_param) == rest["labels"]


def test_classification_regression_and_pairs_equal_native(client, server):
    result = infer(client, "cls", [text_input("text", TEXTS)])
    native = server.native("cls", TEXTS)
    assert [x.decode() for x in result.as_numpy("label")] == [p["label"] for p in native]
    np.testing.assert_allclose(
        result.as_numpy("scores"), scores_of(server, "cls", native), atol=1e-6
    )
    value = infer(client, "reg", [text_input("text", TEXTS)], ["value"])
    expected = [p["value"] for p in server.native("reg", TEXTS)]
    np.testing.assert_allclose(value.as_numpy("value"), expected, atol=1e-6)
    pairs = ["a dog ran", "", "the mat"]
    paired = infer(client, "cls", [text_input("text", TEXTS), text_input("text_pair", pairs)])
    native = server.native("cls", [[TEXTS[0], pairs[0]], TEXTS[1], [TEXTS[2], pairs[2]]])
    np.testing.assert_allclose(
        paired.as_numpy("scores"), scores_of(server, "cls", native), atol=1e-6
    )


def test_a_pinned_version_and_other_kinds(client, server):
    old = infer(client, "cls", [text_input("text", TEXTS)], ["scores"], version="1")
    assert old.get_response().model_version == "1"
    native = server.native("cls", TEXTS, version=1)
    np.testing.assert_allclose(
        old.as_numpy("scores"), scores_of(server, "cls", native, "1"), atol=1e-6
    )
    assert old.as_numpy("label") is None  # only the requested output
    embed = infer(client, "embed", [text_input("text", TEXTS)])
    expected = [p["embedding"] for p in server.native("embed", TEXTS)]
    np.testing.assert_allclose(embed.as_numpy("embedding"), expected, atol=1e-6)
    tokens = infer(client, "tokens", [text_input("text", TEXTS[:1])])
    row = json.loads(tokens.as_numpy("tokens")[0])
    assert [t["label"] for t in row] == [
        t["label"] for t in server.native("tokens", TEXTS[:1])[0]["tokens"]
    ]


def test_typed_contents_are_read_too(server):
    request_type, response_type = method_types("ModelInfer")
    request = request_type(model_name="reg")
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [t.encode() for t in TEXTS[:2]]
    )
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        reply = call(request, metadata=[("authorization", f"Bearer {PREDICT}")])
    values = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    expected = [p["value"] for p in server.native("reg", TEXTS[:2])]
    np.testing.assert_allclose(values, expected, atol=1e-6)


def test_errors_carry_status_and_message(client):
    cases = [
        ("nope", [text_input("text", ["a"])], "", "NOT_FOUND", "no task named 'nope'"),
        ("cls", [text_input("text", ["a"])], "9", "NOT_FOUND", "no version 9"),
        ("cls", [text_input("text_pair", ["a"])], "", "INVALID_ARGUMENT", "'text'"),
        ("embed", [text_input("text", ["a"] * 9)], "", "INVALID_ARGUMENT", "at most 8"),
    ]
    for task, inputs, version, code, words in cases:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(task, inputs, version, headers=grpc_auth())
        assert code in str(caught.value.status()) and words in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("cls", [text_input("text", ["a"])])
    assert "UNAUTHENTICATED" in str(caught.value.status())
    with pytest.raises(InferenceServerException) as caught:
        client.infer(
            "cls", [text_input("text", ["a"])], headers={"authorization": "Bearer nope-nope"}
        )
    assert "PERMISSION_DENIED" in str(caught.value.status())


def test_an_output_the_task_lacks_is_refused_before_the_forward(client, server):
    before = server.http.get("/stats/batches", params={"limit": 1}).json()["last_id"]
    with pytest.raises(InferenceServerException) as caught:
        infer(client, "cls", [text_input("text", ["a"])], outputs=["value"])
    assert "INVALID_ARGUMENT" in str(caught.value.status())
    assert "unknown output 'value'" in caught.value.message()
    assert server.http.get("/stats/batches", params={"limit": 1}).json()["last_id"] == before


def test_grpc_requests_are_counted(client, server):
    infer(client, "reg", [text_input("text", ["a"])])
    text = server.http.get("/metrics").text
    assert 'api="grpc",status="OK",task="reg"' in text
    assert 'api="grpc",status="NOT_FOUND",task="_unknown"' in text


def test_a_taken_grpc_port_fails_at_start_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bitpatch",
                "serve",
                "--store",
                str(tmp_path / "s"),
                "--grpc-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2, run.stderr
    assert f"gRPC port 127.0.0.1:{port} is in use" in run.stderr and "--grpc-port" in run.stderr


def test_bytes_that_are_no_message_are_the_clients_error(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer", response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\x00", metadata=[("authorization", f"Bearer {PREDICT}")], timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in refused.value.details()
