"""The KServe v2 gRPC service (`inference.GRPCInferenceService`) on `--grpc-port`: it runs on
the HTTP server's event loop and calls the same pipeline, so gRPC and REST rows share forwards.
EdgeInterceptor is the gRPC edge: tokens, request metrics, and domain errors as status codes
(from the HTTP edge's status table)."""

from __future__ import annotations

import logging
import socket
import time
from contextvars import ContextVar

import grpc
import orjson
from google.protobuf.message import DecodeError

from ....patches.patch_file import PatchError
from ... import errors
from ...auth import Access
from ...core.pipeline import Outcome, Terms
from ...http.deps import PAGE_SIZE, outside_scope
from ...http.edge import status_of
from ...limits import Limits
from ...metrics import RequestCount
from ...state import ServerState
from ...tenants import EVERYONE, Caller
from ..adapter import KEY_HEADER, Adapter, serve
from .grpc_messages import METHODS, SERVICE, method_types
from .model import (
    InferCall,
    describe,
    infer_call,
    items_of,
    parse_version,
    ready_version,
    refuse_classification,
    server_metadata,
)
from .tensors import InputTensor, check_count, unpack_bytes

log = logging.getLogger(__name__)
Code = grpc.StatusCode
CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
}
ACCESS = {  # RPCs not named here are open
    "ModelInfer": Access.PREDICT,
    "ModelReady": Access.READ,
    "ModelMetadata": Access.READ,
    "RepositoryIndex": Access.READ,
}
COUNTED = {"ModelInfer"}  # predict-like RPCs, in the request metrics (api="grpc")


def code_of(err: Exception) -> grpc.StatusCode:
    """The gRPC status of a domain error: its HTTP status in the edge's table, translated (a
    patch that cannot be served is a failed precondition)."""
    if isinstance(err, PatchError):
        return Code.FAILED_PRECONDITION
    if isinstance(err, errors.DeadlineExceeded):
        return Code.DEADLINE_EXCEEDED
    return CODES.get(status_of(err), Code.INTERNAL)


CALLER: ContextVar[Caller] = ContextVar("bitpatch_grpc_caller", default=EVERYONE)


def model_named(request) -> str:
    """The model (task) an RPC's request names ('' for none)."""
    return getattr(request, "model_name", "") or getattr(request, "name", "")


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Every RPC: its token checked against the policy (from `authorization` metadata), its
    domain errors answered as status codes with their message, predict-like RPCs counted."""

    def __init__(self, state: ServerState):
        self.state = state

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        authorization = dict(details.invocation_metadata or ()).get("authorization", "")
        inner, decode = handler.unary_unary, handler.request_deserializer

        async def answer(data, context):
            try:
                access = ACCESS.get(method, Access.OPEN)
                caller = self.state.settings.tokens.identify(access, authorization)
                request = decode_message(decode, data, method) if decode else data
                task = model_named(request)
                if task and not caller.sees(task):
                    raise outside_scope(caller, access, task)
                CALLER.set(caller)
                if method in COUNTED:
                    return await self.counted(inner, request, context)
                return await inner(request, context)
            except (errors.ServerError, PatchError) as err:
                await context.abort(code_of(err), str(err))
            except Exception:
                log.exception("event=unexpected_error rpc=%s", method)
                await context.abort(Code.INTERNAL, f"the server failed on {method}; it is logged")

        return grpc.unary_unary_rpc_method_handler(
            answer,  # takes the raw bytes: a message that does not parse is the client's error
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    async def counted(self, inner, request, context):
        """`inner`, counted by the status code it answers with (not while loading)."""
        caller = CALLER.get()
        token = caller.name if caller is not EVERYONE else None
        count = RequestCount("grpc", request.model_name, token=token)
        try:
            reply = await inner(request, context)
        except errors.NotReady:
            raise
        except (errors.ServerError, PatchError) as err:
            self.state.metrics.count_request(count, code_of(err).name, self.state.has_task)
            raise
        self.state.metrics.count_request(count, "OK", self.state.has_task)
        return reply


class GrpcInferAdapter(Adapter[object, InferCall, object]):
    """`ModelInfer`: a ModelInferRequest in, a ModelInferResponse out (raw output contents)."""

    api = "grpc"
    reply_type = method_types("ModelInfer")[1]

    def decode(self, source, limits: Limits) -> InferCall:
        request, key = source  # the message, and the x-bitpatch-key metadata
        outputs = [output_name(o) for o in request.outputs]
        tensors = input_tensors(request)
        version = parse_version(request.model_version, request.model_name)
        items = items_of(tensors, limits)
        return infer_call(request.model_name, version, items, outputs, request, key)

    def encode(self, call: InferCall, outcome: Outcome):
        reply = self.reply_type(
            model_name=call.asked.task, model_version=str(outcome.version), id=call.request.id
        )
        for tensor in call.tensors(outcome):
            reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            reply.raw_output_contents.append(tensor.to_bytes())
        return reply


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


GRPC_INFER = GrpcInferAdapter()


def decode_message(decode, data: bytes, method: str):
    """The request message of `data`, or InvalidRequest when the bytes are not one."""
    try:
        return decode(data)
    except DecodeError:
        raise errors.InvalidRequest(
            f"the {method} request is not a valid protobuf message of the KServe v2 "
            "inference protocol (grpc_service.proto); send one built from its definition"
        ) from None


class InferenceService:
    """The RPC handlers; each takes (request, context) and answers a response message."""

    def __init__(self, state: ServerState):
        self.state = state

    async def ServerLive(self, request, context):
        return self.response("ServerLive", live=True)

    async def ServerReady(self, request, context):
        return self.response("ServerReady", ready=self.state.is_ready)

    async def ServerMetadata(self, request, context):
        return self.response("ServerMetadata", **server_metadata())

    async def ModelReady(self, request, context):
        ready_version(self.state.ready().registry, request.name, request.version)
        return self.response("ModelReady", ready=True)

    async def ModelMetadata(self, request, context):
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
        """A page of tasks: `bitpatch-limit` and `bitpatch-after` request metadata choose it,
        `bitpatch-next` and `bitpatch-total` trailing metadata tell what is beyond."""
        registry = self.state.ready().registry
        limit, after = page_asked(context.invocation_metadata())
        page = registry.task_page(limit, after, keep=CALLER.get().sees)
        reply = self.response("RepositoryIndex")
        for task in page.names:
            if (version := registry.active_or_none(task)) is not None:
                reply.models.add(name=task, version=str(version), state="READY")
        trailing = [("bitpatch-total", str(page.total))]
        if page.next is not None:
            trailing.append(("bitpatch-next", page.next))
        context.set_trailing_metadata(tuple(trailing))
        return reply

    async def ModelInfer(self, request, context):
        key = dict(context.invocation_metadata() or ()).get(KEY_HEADER)
        source, settings = (request, key), self.state.settings
        deadline = grpc_deadline(context.time_remaining(), settings.max_queue_ms)
        terms = Terms(deadline, CALLER.get())
        return await serve(GRPC_INFER, self.state.ready(), source, settings.limits, None, terms)

    @staticmethod
    def response(method: str, **fields):
        """A new response message of `method`."""
        return method_types(method)[1](**fields)


def grpc_deadline(remaining: float | None, default_ms: float) -> float | None:
    """The call's deadline (time.monotonic()): its own, else --max-queue-ms (0: none)."""
    if remaining is not None:
        return time.monotonic() + remaining
    return time.monotonic() + default_ms / 1000 if default_ms else None


def page_asked(metadata) -> tuple[int, str]:
    """(limit, after) of a RepositoryIndex call's metadata; InvalidRequest for a bad limit."""
    given = dict(metadata or ())
    raw = given.get("bitpatch-limit", str(PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise errors.InvalidRequest(
            f"bitpatch-limit must be a whole number from 1 to 10000, got {raw!r}"
        )
    return int(raw), given.get("bitpatch-after", "")


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
        ("grpc.max_receive_message_length", s.limits.request.size),
    ]
    server = grpc.aio.server(options=options, interceptors=[EdgeInterceptor(state)])
    service = InferenceService(state)
    handlers = {}
    for method in METHODS:
        request_type, response_type = method_types(method)
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            getattr(service, method),
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
