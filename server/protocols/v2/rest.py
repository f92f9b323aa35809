"""The Open Inference Protocol (KServe v2) over REST, on the same port as the native API:
server and model metadata, health, readiness, the repository index and infer, with JSON and
binary tensor data. Errors take the protocol's shape (see server/http/edge.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ....patches.patch_file import PatchError
from ...errors import InvalidRequest, ServerError
from ...http.bodies import read_limited
from ...http.deps import PredictAuth, ReaderAuth, StateDep, TaskName
from ...http.edge import status_of
from ...http.schemas import V2InferRequest
from ...state import ServerState
from ..native.routes import task_label
from .model import (
    chosen_outputs,
    describe,
    items_of,
    output_tensors,
    parse_version,
    ready_version,
    server_metadata,
)
from .request import decode_infer_request
from .tensors import decompress, encode_response, split_body

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": V2InferRequest.model_json_schema()}},
    }
}
ModelVersion = Annotated[str, Path(description="a stored version of the task", examples=["1"])]
HEADER_LENGTH = "Inference-Header-Content-Length"


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
async def repository_index(request: Request, state: StateDep):
    """Every task with its active version, state READY (the body may be empty)."""
    registry = state.ready().registry
    await read_index_body(request)
    return [
        {"name": task, "version": str(registry.active_version(task)), "state": "READY"}
        for task in registry.tasks()
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


async def read_index_body(request: Request) -> None:
    """The index request's optional body: `{}`, `{"ready": bool}` or nothing."""
    body = await read_limited(request, 64 * 1024, "the repository index body limit")
    if not body.strip():
        return
    value = split_body(body, None)[0]
    if not isinstance(value, dict) or set(value) - {"repository_name", "ready"}:
        raise InvalidRequest('the index request body is {"ready": bool} or empty')


async def run_infer(state: ServerState, request: Request, task: str, version: str | None):
    """decode -> the pipeline's stages -> encode, counted as api="v2"."""
    started = time.perf_counter()
    pipeline = state.ready()
    label = task_label(pipeline.registry, task)
    try:
        s = state.settings
        body = await read_limited(request, s.request_limit, "--max-request-bytes")
        body = decompress(body, request.headers.get("content-encoding"), s.request_limit)
        call = decode_infer_request(*split_body(body, request.headers.get(HEADER_LENGTH)))
        items = items_of(call.inputs, s.max_inputs, s.max_input_chars)
        outcome = await pipeline.run(task, items, parse_version(version, task))
        names = chosen_outputs(outcome.head, task, call.output_names)
        tensors = output_tensors(outcome.head, outcome.predictions, names)
    except (ServerError, PatchError) as err:
        state.metrics.count_request("v2", label, status_of(err, "v2"), started)
        raise
    header = {"model_name": task, "model_version": str(outcome.version)}
    if call.request_id:
        header["id"] = call.request_id
    content, header_length = encode_response(header, tensors, call.binary_outputs(names))
    state.metrics.count_request("v2", task, 200, started)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )
