"""`POST /tasks/{task}/predict` and `POST /predict` (fan-out): authorize (headers only), read
the body under its limit, then the native adapter: decode -> pipeline -> encode."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...http.deps import PredictAuth, StateDep, TaskName, read_limited, terms_of
from ...http.edge import OrjsonResponse, counted
from ...http.schemas import FanoutRequest, FanoutResponse, PredictRequest, PredictResponse
from ...limits import Limits
from ..adapter import KEY_HEADER, serve
from .request import FANOUT, FANOUT_LABEL, PREDICT, NativeSource

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
    limits = state.settings.limits
    source = await native_source(request, task, limits)
    terms = terms_of(request, state)
    return OrjsonResponse(await serve(PREDICT, pipeline, source, limits, count, terms))


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
    limits = state.settings.limits
    source = await native_source(request, None, limits)
    terms = terms_of(request, state)
    return OrjsonResponse(await serve(FANOUT, pipeline, source, limits, count, terms))


async def native_source(request: Request, task: str | None, limits: Limits) -> NativeSource:
    """The body (under its limit) and the headers the native adapters read."""
    headers = request.headers
    body = await read_limited(request, limits.request)
    return NativeSource(task, body, headers.get("content-type"), headers.get(KEY_HEADER))
