"""`POST /tasks/{task}/predict`."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from ..patches.encoding import encode_inputs
from .deps import PredictAuth, StateDep
from .errors import ApiError
from .responses import OrjsonResponse
from .schemas import PredictRequest, PredictResponse
from .state import ServerState

router = APIRouter()


@router.post("/tasks/{task}/predict", response_model=PredictResponse, dependencies=[PredictAuth])
async def predict(task: str, body: PredictRequest, state: StateDep):
    """Predict with the task's active (or a named) version; inputs are texts or [text, pair]."""
    started = time.perf_counter()
    known = state.registry is not None and state.registry.has_task(task)
    label = task if known else "_unknown"  # unknown names must not grow the metric's labels
    try:
        result = await _predict(task, body, state)
    except ApiError as err:
        state.metrics.requests.labels(label, str(err.status)).inc()
        raise
    state.metrics.requests.labels(task, "200").inc()
    state.metrics.latency.labels(task).observe(time.perf_counter() - started)
    return OrjsonResponse(result)


async def _predict(task: str, body: PredictRequest, state: ServerState) -> dict:
    registry, batcher = state.ready()
    limit = state.settings.max_inputs
    if len(body.inputs) > limit:
        raise ApiError(
            422,
            "too_many_inputs",
            f"{len(body.inputs)} inputs sent, at most {limit} "
            "per request (--max-inputs); split the request",
        )
    lease = registry.acquire(task, body.version)
    try:
        batcher.admit(len(body.inputs))
    except ApiError:
        registry.release(lease)
        raise
    try:
        rows = await asyncio.get_running_loop().run_in_executor(
            state.tokenize_pool,
            encode_inputs,
            registry.engine.backbone.tokenizer,
            body.inputs,
            lease.head.max_length,
        )
    except BaseException:
        batcher.withdraw()
        registry.release(lease)
        raise
    future = batcher.submit(lease, rows)
    future.add_done_callback(lambda _: registry.release(lease))
    predictions = await future
    return {"task": task, "version": lease.version, "predictions": predictions}
