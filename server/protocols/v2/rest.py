"""The Open Inference Protocol (KServe v2) over REST, on the same port as the native API:
server and model metadata, health, readiness, the repository index and infer, with JSON and
binary tensor data. Errors take the protocol's shape (see server/http/edge.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ...core.pipeline import Outcome
from ...errors import InvalidRequest
from ...http.deps import (
    PAGE_SIZE,
    PageAfter,
    PageLimit,
    PredictAuth,
    ReaderAuth,
    StateDep,
    TaskName,
    caller_of,
    read_limited,
    terms_of,
)
from ...http.edge import counted
from ...http.schemas import V2InferRequest
from ...limits import BodyLimit, Limits
from ...state import ServerState
from ..adapter import KEY_HEADER, Adapter, serve
from .model import (
    InferCall,
    describe,
    infer_call,
    items_of,
    parse_version,
    ready_version,
    server_metadata,
)
from .request import InferRequest, decode_infer_request
from .tensors import decompress, encode_response, split_body

HEADER_LENGTH = "Inference-Header-Content-Length"

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": V2InferRequest.model_json_schema()}},
    }
}
ModelVersion = Annotated[str, Path(description="a stored version of the task", examples=["1"])]


@router.get("")
async def metadata():
    """Server metadata: name, version and the protocol extensions served."""
    return server_metadata()


@router.get("/health/live")
async def live():
    """200 while the process answers."""
    return {"live": True}


@router.get("/health/ready")
async def ready(state: StateDep):
    """200 once the backbone and store are loaded (every stored version is then ready)."""
    state.ready()
    return {"ready": True}


@router.get("/models/{task}", dependencies=[ReaderAuth])
async def model(task: TaskName, state: StateDep):
    """The task's active version: inputs, outputs by kind, kind and labels in `parameters`."""
    return await describe(state.ready(), task, None)


@router.get("/models/{task}/versions/{version}", dependencies=[ReaderAuth])
async def model_version(task: TaskName, version: ModelVersion, state: StateDep):
    """One stored version's metadata."""
    return await describe(state.ready(), task, parse_version(version, task))


@router.get("/models/{task}/ready", dependencies=[ReaderAuth])
async def model_ready(task: TaskName, state: StateDep):
    """200 when the task has an active version."""
    registry = state.ready().registry
    return {"name": task, "version": str(registry.active_version(task)), "ready": True}


@router.get("/models/{task}/versions/{version}/ready", dependencies=[ReaderAuth])
async def model_version_ready(task: TaskName, version: ModelVersion, state: StateDep):
    """200 when the version is stored: every stored version is served on demand."""
    number = ready_version(state.ready().registry, task, version)
    return {"name": task, "version": str(number), "ready": True}


@router.post("/repository/index", dependencies=[ReaderAuth])
async def repository_index(
    request: Request,
    response: Response,
    state: StateDep,
    limit: PageLimit = PAGE_SIZE,
    after: PageAfter = "",
):
    """Tasks with their active version, state READY (the body may be empty), in name order,
    `limit` at a time: the protocol's answer is a bare list, so the next page is named by a
    `Link: <...>; rel="next"` header (and `X-Total-Count` counts every task)."""
    registry = state.ready().registry
    await read_index_body(request, state.settings.limits.index)
    page = registry.task_page(limit, after, keep=caller_of(request).sees)
    response.headers["X-Total-Count"] = str(page.total)
    if page.next is not None:
        following = request.url.include_query_params(limit=limit, after=page.next)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return [
        {"name": task, "version": str(version), "state": "READY"}
        for task in page.names
        if (version := registry.active_or_none(task)) is not None
    ]


@router.post("/models/{task}/infer", dependencies=[PredictAuth], openapi_extra=INFER_BODY)
async def infer(task: TaskName, request: Request, state: StateDep):
    """Infer with the task's active version."""
    return await run_infer(state, request, task, None)


@router.post(
    "/models/{task}/versions/{version}/infer",
    dependencies=[PredictAuth],
    openapi_extra=INFER_BODY,
)
async def infer_version(task: TaskName, version: ModelVersion, request: Request, state: StateDep):
    """Infer with a pinned version."""
    return await run_infer(state, request, task, version)


async def read_index_body(request: Request, limit: BodyLimit) -> None:
    """The index request's optional body: `{}`, `{"ready": bool}` or nothing."""
    body = await read_limited(request, limit)
    if not body.strip():
        return
    value = split_body(body, None)[0]
    if not isinstance(value, dict) or set(value) - {"repository_name", "ready"}:
        raise InvalidRequest('the index request body is {"ready": bool} or empty')


async def run_infer(state: ServerState, request: Request, task: str, version: str | None):
    """The REST infer adapter: decode -> pipeline -> encode, counted as api="v2"."""
    pipeline = state.ready()
    count = counted(request, REST_INFER.api, task)
    limits = state.settings.limits
    body = await read_limited(request, limits.request)
    headers = request.headers
    source = RestSource(
        task,
        version,
        body,
        headers.get("content-encoding"),
        headers.get(HEADER_LENGTH),
        headers.get(KEY_HEADER),
    )
    answer = await serve(REST_INFER, pipeline, source, limits, count, terms_of(request, state))
    if answer.header_length is None:
        return Response(answer.content, media_type="application/json")
    return Response(
        answer.content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(answer.header_length)},
    )


@dataclass(frozen=True)
class RestSource:
    """A REST infer request as the route read it."""

    task: str
    version: str | None
    body: bytes
    content_encoding: str | None
    header_length: str | None
    key: str | None = None  # X-Bitpatch-Key


@dataclass(frozen=True)
class RestAnswer:
    """A REST infer answer: the body and its `Inference-Header-Content-Length` (None: JSON)."""

    content: bytes
    header_length: int | None


class RestInferAdapter(Adapter[RestSource, InferCall, RestAnswer]):
    """`POST /v2/models/{task}[/versions/{v}]/infer`: a JSON header and binary tensor data."""

    api = "v2"

    def decode(self, source: RestSource, limits: Limits) -> InferCall:
        body = decompress(source.body, source.content_encoding, limits.request)
        request = decode_infer_request(*split_body(body, source.header_length))
        items = items_of(request.inputs, limits)
        version = parse_version(source.version, source.task)
        outputs = request.output_names
        return infer_call(source.task, version, items, outputs, request, source.key)

    def encode(self, call: InferCall, outcome: Outcome) -> RestAnswer:
        request: InferRequest = call.request
        header = {"model_name": call.asked.task, "model_version": str(outcome.version)}
        if request.request_id:
            header["id"] = request.request_id
        tensors = call.tensors(outcome)
        binary = request.binary_outputs([t.name for t in tensors])
        return RestAnswer(*encode_response(header, tensors, binary))


REST_INFER = RestInferAdapter()
