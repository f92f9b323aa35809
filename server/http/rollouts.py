"""Rollouts over REST: `PUT|GET|DELETE /tasks/{task}/rollout`, `POST .../rollout/promote`, and
`POST /tasks/{task}/evaluate` (labelled inputs scored on every version of the rollout)."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...patches.engine import TaskHead
from ..core.rollouts import parse_rollout
from ..core.scoring import scorer_of
from ..errors import InvalidRequest
from ..protocols.native.request import check_inputs, check_json_type, parse_json
from ..state import ServerState
from .deps import AdminAuth, PredictAuth, ReaderAuth, StateDep, TaskName, read_limited
from .edge import OrjsonResponse
from .schemas import EvaluateRequest, RolloutRequest

router = APIRouter(tags=["rollouts"])
log = logging.getLogger(__name__)
EVALUATE_SHAPE = '{"inputs": ["text" or ["text", "text_pair"], ...], "labels": [label, ...]}'


def body_schema(model) -> dict:
    """OpenAPI: a JSON request body documented by `model`."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


async def read_json(request: Request, state: ServerState) -> object:
    """The request's JSON body, under the request limit."""
    check_json_type(request.headers.get("content-type"))
    return parse_json(await read_limited(request, state.settings.limits.request))


@router.put(
    "/tasks/{task}/rollout", dependencies=[AdminAuth], openapi_extra=body_schema(RolloutRequest)
)
async def put_rollout(task: TaskName, request: Request, state: StateDep):
    """Start (or replace) the task's rollout: a canary, a shadow, a guard."""
    pipeline = state.ready()
    rollout = parse_rollout(await read_json(request, state))
    pipeline.watch.check_guard_fits(task, rollout)
    await run_in_threadpool(pipeline.registry.set_rollout, task, rollout)
    return OrjsonResponse(pipeline.watch.answer(task))


@router.get("/tasks/{task}/rollout", dependencies=[ReaderAuth])
async def get_rollout(task: TaskName, state: StateDep):
    """The task's rollout and this replica's figures of its versions."""
    return OrjsonResponse(state.ready().watch.answer(task))


@router.delete("/tasks/{task}/rollout", dependencies=[AdminAuth])
async def end_rollout(task: TaskName, state: StateDep):
    """End the rollout: the active version serves all traffic."""
    pipeline = state.ready()
    await run_in_threadpool(pipeline.registry.end_rollout, task, "ended by request")
    return OrjsonResponse(pipeline.watch.answer(task))


@router.post("/tasks/{task}/rollout/promote", dependencies=[AdminAuth])
async def promote(task: TaskName, state: StateDep):
    """Make the canary (or else the shadow) version active and end the rollout, atomically."""
    pipeline = state.ready()
    info, _ = await run_in_threadpool(pipeline.registry.promote, task)
    state.metrics.task_event("activations", task)
    log.info("event=promote task=%s version=%d", task, info.version)
    return OrjsonResponse(pipeline.watch.answer(task))


@router.post(
    "/tasks/{task}/evaluate",
    dependencies=[PredictAuth],
    openapi_extra=body_schema(EvaluateRequest),
)
async def evaluate(task: TaskName, request: Request, state: StateDep):
    """Score the active, canary and shadow versions on labelled inputs, in shared forwards."""
    pipeline = state.ready()
    inputs, labels = decode_evaluate(await read_json(request, state), state)
    outcomes = await pipeline.evaluate(task, inputs, partial(check_labels, labels))
    return OrjsonResponse(pipeline.watch.evaluated(task, outcomes, labels))


def decode_evaluate(body: object, state: ServerState) -> tuple[list, list]:
    """Checked inputs and labels of an evaluate body (one label per input)."""
    if not isinstance(body, dict) or set(body) != {"inputs", "labels"}:
        raise InvalidRequest(f"the body must be {EVALUATE_SHAPE}")
    inputs = check_inputs(body["inputs"], state.settings.limits, EVALUATE_SHAPE)
    labels = body["labels"]
    if not isinstance(labels, list) or len(labels) != len(inputs):
        got = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise InvalidRequest(f"labels must be a list with one label per input: {len(inputs)} "
                             f"inputs, got {got}")  # fmt: skip
    return inputs, labels


def check_labels(labels: list, head: TaskHead) -> None:
    """Every label is one the task's kind takes (checked before the forward)."""
    scorer = scorer_of(head.kind)
    for i, label in enumerate(labels):
        scorer.check_label(head.labels, label, f"labels[{i}]")
