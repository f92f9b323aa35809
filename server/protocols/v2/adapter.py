"""The Open Inference Protocol's infer as protocol adapters, one per transport: REST (JSON
header and binary tensor data) and gRPC (`ModelInfer` messages). Both decode into an InferCall,
check the requested outputs on the leased head before the forward, and encode output tensors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ....patches.encoding import Item
from ...core.pipeline import Outcome
from ...errors import InvalidRequest
from ...limits import Limits
from ..adapter import Adapter, TaskCall
from .grpc_messages import method_types
from .model import chosen_outputs, items_of, output_tensors, parse_version, refuse_classification
from .request import InferRequest, decode_infer_request
from .tensors import (
    InputTensor,
    OutputTensor,
    check_count,
    decompress,
    encode_response,
    split_body,
    unpack_bytes,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class InferCall:
    """What an infer request asks, in either transport."""

    task: str
    version: int | None
    items: list[Item]
    outputs: list[str]  # requested output names; empty: every output of the task's kind
    request: object  # the transport's own request (ids, binary-output choices)

    def tensors(self, outcome: Outcome) -> list[OutputTensor]:
        """The output tensors answered."""
        names = chosen_outputs(outcome.head, self.task, self.outputs)
        return output_tensors(outcome.head, outcome.predictions, names)


class InferAdapter(Adapter):
    """What both transports share: the task call, its requested outputs checked on the head."""

    def task_call(self, call: InferCall) -> TaskCall:
        check = partial(chosen_outputs, task=call.task, requested=call.outputs)
        return TaskCall(call.task, call.items, call.version, check)


@dataclass(frozen=True)
class RestSource:
    """A REST infer request as the route read it."""

    task: str
    version: str | None
    body: bytes
    content_encoding: str | None
    header_length: str | None


@dataclass(frozen=True)
class RestAnswer:
    """A REST infer answer: the body and its `Inference-Header-Content-Length` (None: JSON)."""

    content: bytes
    header_length: int | None


class RestInferAdapter(InferAdapter):
    """`POST /v2/models/{task}[/versions/{v}]/infer`."""

    api = "v2"

    def decode(self, source: RestSource, limits: Limits) -> InferCall:
        body = decompress(source.body, source.content_encoding, limits.request)
        request = decode_infer_request(*split_body(body, source.header_length))
        items = items_of(request.inputs, limits)
        version = parse_version(source.version, source.task)
        return InferCall(source.task, version, items, request.output_names, request)

    def encode(self, call: InferCall, outcome: Outcome) -> RestAnswer:
        request: InferRequest = call.request
        header = {"model_name": call.task, "model_version": str(outcome.version)}
        if request.request_id:
            header["id"] = request.request_id
        tensors = call.tensors(outcome)
        binary = request.binary_outputs([t.name for t in tensors])
        return RestAnswer(*encode_response(header, tensors, binary))


class GrpcInferAdapter(InferAdapter):
    """`ModelInfer`: a ModelInferRequest in, a ModelInferResponse out (raw output contents)."""

    api = "grpc"

    def decode(self, source, limits: Limits) -> InferCall:
        items = items_of(input_tensors(source), limits)
        version = parse_version(source.model_version, source.model_name)
        outputs = [output_name(o) for o in source.outputs]
        return InferCall(source.model_name, version, items, outputs, source)

    def encode(self, call: InferCall, outcome: Outcome):
        reply = method_types("ModelInfer")[1](
            model_name=call.task, model_version=str(outcome.version), id=call.request.id
        )
        for tensor in call.tensors(outcome):
            reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            reply.raw_output_contents.append(tensor.to_bytes())
        return reply


def input_tensors(request) -> list[InputTensor]:
    """The request's inputs, from raw_input_contents (one per input) or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per "
            "input, in order (or typed contents for every input)"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype != "BYTES":
            raise InvalidRequest(
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


REST_INFER = RestInferAdapter()
GRPC_INFER = GrpcInferAdapter()
