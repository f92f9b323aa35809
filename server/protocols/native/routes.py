"""`POST /tasks/{task}/predict` and `POST /predict` (fan-out): authorize (headers only), read
the body under its limit, then the native adapter: decode -> pipeline -> encode."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...http.deps import PredictAuth, StateDep, TaskName, read_limited
from ...http.edge import OrjsonResponse, counted
from ...http.schemas import FanoutRequest, FanoutResponse, PredictRequest, PredictResponse
from ..adapter import serve
from .request import FANOUT, FANOUT_LABEL, PREDICT, check_json_type

router = APIRouter()


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
    pipeline = state.ready()
    count = counted(request, PREDICT.api, task)
    check_json_type(request.headers.get("content-type"))
    limits = state.settings.limits
    body = await read_limited(request, limits.request)
    return OrjsonResponse(await serve(PREDICT, pipeline, (task, body), limits, count))


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
    pipeline = state.ready()
    count = counted(request, FANOUT.api, FANOUT_LABEL)
    check_json_type(request.headers.get("content-type"))
    limits = state.settings.limits
    body = await read_limited(request, limits.request)
    return OrjsonResponse(await serve(FANOUT, pipeline, body, limits, count))
