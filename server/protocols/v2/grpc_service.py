"""The KServe v2 gRPC service (`inference.GRPCInferenceService`) on `--grpc-port`: it runs on
the HTTP server's event loop and calls the same pipeline, so gRPC and REST rows share forwards.
This module is the gRPC edge: domain errors become status codes here."""

from __future__ import annotations

import logging
import socket
import time

import grpc
import orjson

from ....patches.patch_file import PatchError
from ... import errors
from ...http.deps import check_bearer
from ...state import ServerState
from ..native.routes import task_label
from .grpc_messages import METHODS, SERVICE, method_types
from .model import (
    chosen_outputs,
    describe,
    items_of,
    output_tensors,
    parse_version,
    ready_version,
    refuse_classification,
    server_metadata,
)
from .tensors import InputTensor, check_count, unpack_bytes

log = logging.getLogger(__name__)
Code = grpc.StatusCode
CODES: dict[type[errors.ServerError], grpc.StatusCode] = {
    errors.InvalidRequest: Code.INVALID_ARGUMENT,
    errors.InvalidTaskName: Code.INVALID_ARGUMENT,
    errors.BodyTooLarge: Code.RESOURCE_EXHAUSTED,
    errors.UnknownTask: Code.NOT_FOUND,
    errors.UnknownVersion: Code.NOT_FOUND,
    errors.MissingToken: Code.UNAUTHENTICATED,
    errors.WrongToken: Code.PERMISSION_DENIED,
    errors.Overloaded: Code.UNAVAILABLE,
    errors.NotReady: Code.UNAVAILABLE,
    errors.StoreUnavailable: Code.UNAVAILABLE,
}


def code_of(err: Exception) -> grpc.StatusCode:
    """The gRPC status of a domain error."""
    if isinstance(err, PatchError):
        return Code.FAILED_PRECONDITION
    for cls in type(err).__mro__:
        if cls in CODES:
            return CODES[cls]
    return Code.INTERNAL


class InferenceService:
    """The RPC handlers; each takes (request, context) and answers a response message."""

    def __init__(self, state: ServerState):
        self.state = state

    def authorize(self, context: grpc.aio.ServicerContext, scope: str) -> None:
        """The predict or reader token from `authorization` metadata, as REST checks it."""
        s = self.state.settings
        accepted = s.read_tokens if scope == "read" or s.predict_token else ()
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        check_bearer(header, accepted, "predict" if scope == "predict" else "reading tasks")

    async def ServerLive(self, request, context):
        return self.response("ServerLive", live=True)

    async def ServerReady(self, request, context):
        return self.response("ServerReady", ready=self.state.pipeline is not None)

    async def ServerMetadata(self, request, context):
        return self.response("ServerMetadata", **server_metadata())

    async def ModelReady(self, request, context):
        self.authorize(context, "read")
        ready_version(self.state.ready().registry, request.name, request.version)
        return self.response("ModelReady", ready=True)

    async def ModelMetadata(self, request, context):
        self.authorize(context, "read")
        task = request.name
        meta = await describe(self.state.ready(), task, parse_version(request.version, task))
        reply = self.response("ModelMetadata", name=task, versions=meta["versions"])
        reply.platform = meta["platform"]
        for field in ("inputs", "outputs"):
            for tensor in meta[field]:
                getattr(reply, field).add(**tensor)
        reply.parameters["kind"].string_param = meta["parameters"]["kind"]
        labels = meta["parameters"]["labels"]
        reply.parameters["labels"].string_param = orjson.dumps(labels).decode()
        return reply

    async def RepositoryIndex(self, request, context):
        self.authorize(context, "read")
        registry = self.state.ready().registry
        reply = self.response("RepositoryIndex")
        for task in registry.tasks():
            reply.models.add(name=task, version=str(registry.active_version(task)), state="READY")
        return reply

    async def ModelInfer(self, request, context):
        started = time.perf_counter()
        self.authorize(context, "predict")
        pipeline = self.state.ready()
        task = request.model_name
        label = task_label(pipeline.registry, task)
        s = self.state.settings
        try:
            items = items_of(input_tensors(request), s.max_inputs, s.max_input_chars)
            version = parse_version(request.model_version, task)
            outcome = await pipeline.run(task, items, version)
            wanted = [output_name(o) for o in request.outputs]
            names = chosen_outputs(outcome.head, task, wanted)
            tensors = output_tensors(outcome.head, outcome.predictions, names)
        except (errors.ServerError, PatchError) as err:
            self.state.metrics.count_request("grpc", label, code_of(err).name, started)
            raise
        reply = self.response("ModelInfer", model_name=task, model_version=str(outcome.version))
        reply.id = request.id
        for tensor in tensors:
            reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            reply.raw_output_contents.append(tensor.to_bytes())
        self.state.metrics.count_request("grpc", task, "OK", started)
        return reply

    @staticmethod
    def response(method: str, **fields):
        """A new response message of `method`."""
        return method_types(method)[1](**fields)


def input_tensors(request) -> list[InputTensor]:
    """The request's inputs, from raw_input_contents (one per input) or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise errors.InvalidRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per "
            "input, in order (or typed contents for every input)"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype != "BYTES":
            raise errors.InvalidRequest(
                f"input {tensor.name!r} is {tensor.datatype}; it must be BYTES (UTF-8 text)"
            )
        if raw:
            elements = unpack_bytes(raw[i], tensor.name)
        else:
            elements = list(tensor.contents.bytes_contents)
        shape = tuple(tensor.shape)
        check_count(tensor.name, shape, len(elements))
        tensors.append(InputTensor(tensor.name, tensor.datatype, shape, elements))
    return tensors


def output_name(requested) -> str:
    """A requested output's name; the classification extension is refused."""
    refuse_classification(requested.name, requested.parameters)
    return requested.name


def guarded(handler, method: str):
    """The handler, its domain errors answered as gRPC statuses with their message."""

    async def call(request, context):
        try:
            return await handler(request, context)
        except (errors.ServerError, PatchError) as err:
            await context.abort(code_of(err), str(err))
        except Exception:
            log.exception("event=unexpected_error rpc=%s", method)
            await context.abort(Code.INTERNAL, f"the server failed on {method}; it is logged")

    return call


def check_port_free(host: str, port: int) -> None:
    """ValueError naming the port when something listens on it already."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ValueError(
                f"the gRPC port {host}:{port} is in use ({err.strerror}); choose another "
                "with --grpc-port (BITPATCH_GRPC_PORT), or 0 to serve no gRPC"
            ) from None


async def start_grpc(state: ServerState) -> grpc.aio.Server:
    """Serve the v2 gRPC service on the configured port (shared by --processes N workers)."""
    s = state.settings
    options = [
        ("grpc.so_reuseport", 1 if s.processes > 1 else 0),
        ("grpc.max_receive_message_length", s.request_limit),
    ]
    server = grpc.aio.server(options=options)
    service = InferenceService(state)
    handlers = {}
    for method in METHODS:
        request_type, response_type = method_types(method)
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            guarded(getattr(service, method), method),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        check_port_free(s.host, s.grpc_port)
        raise
    await server.start()
    log.info("event=grpc_listening address=%s", address)
    return server
