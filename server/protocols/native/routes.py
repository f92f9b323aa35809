"""`POST /tasks/{task}/predict`: authorize (headers only), read the body under its limit,
decode, then the pipeline's stages (lease, tokenize, batch, forward) and encode."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ....patches.patch_file import PatchError
from ...errors import ServerError
from ...http.bodies import read_limited
from ...http.deps import PredictAuth, StateDep, TaskName
from ...http.edge import status_of
from ...http.responses import OrjsonResponse
from ...http.schemas import FanoutRequest, FanoutResponse, PredictRequest, PredictResponse
from .request import check_json_type, decode_fanout, decode_predict

router = APIRouter()


def task_label(registry, task: str) -> str:
    """The task as a metric label: unknown names share one label, so the set stays bounded."""
    return task if registry.has_task(task) else "_unknown"


BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post(
    "/tasks/{task}/predict",
    response_model=PredictResponse,
    dependencies=[PredictAuth],
    openapi_extra=BODY_SCHEMA,
)
async def predict(task: TaskName, request: Request, state: StateDep):
    """Predict with the task's active (or a named) version; inputs are texts or [text, pair]."""
    started = time.perf_counter()
    pipeline = state.ready()
    label = task_label(pipeline.registry, task)
    try:
        s = state.settings
        check_json_type(request.headers.get("content-type"))
        body = await read_limited(request, s.request_limit, "--max-request-bytes")
        result = await pipeline.predict(task, decode_predict(body, s.max_inputs, s.max_input_chars))
    except (ServerError, PatchError) as err:
        state.metrics.count_request("native", label, status_of(err), started)
        raise
    state.metrics.count_request("native", task, 200, started)
    return OrjsonResponse(result)


@router.post(
    "/predict",
    response_model=FanoutResponse,
    dependencies=[PredictAuth],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FanoutRequest.model_json_schema()}},
        }
    },
)
async def fan_out(request: Request, state: StateDep):
    """Fan-out: every input through each named task's active version, in shared forwards."""
    started = time.perf_counter()
    pipeline = state.ready()
    try:
        s = state.settings
        check_json_type(request.headers.get("content-type"))
        body = await read_limited(request, s.request_limit, "--max-request-bytes")
        call = decode_fanout(body, s.max_inputs, s.max_input_chars)
        result = await pipeline.fan_out(call.tasks, call.inputs)
    except (ServerError, PatchError) as err:
        state.metrics.count_request("native", "_fanout", status_of(err), started)
        raise
    state.metrics.count_request("native", "_fanout", 200, started)
    return OrjsonResponse(result)
