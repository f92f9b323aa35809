"""OpenAI-compatible routes: `POST /v1/embeddings` for embedding tasks and `GET /v1/models`.
Errors take OpenAI's shape (see server/http/edge.py)."""

from __future__ import annotations

import time
from datetime import datetime

from fastapi import APIRouter, Request, Response

from ....patches.patch_file import PatchError
from ...core.registry import Registry
from ...errors import ServerError
from ...http.bodies import read_limited
from ...http.deps import PredictAuth, ReaderAuth, StateDep, TaskName
from ...http.edge import status_of
from ...http.schemas import EmbeddingsRequest
from ..native.request import check_json_type
from ..native.routes import task_label
from .embeddings import check_embedding_task, decode_embeddings, encode_embeddings

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


@router.post(
    "/embeddings",
    dependencies=[PredictAuth],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
        }
    },
)
async def embeddings(request: Request, state: StateDep):
    """Embeddings of `input` by the embedding task named in `model`."""
    started = time.perf_counter()
    pipeline = state.ready()
    label = "_unknown"
    try:
        s = state.settings
        check_json_type(request.headers.get("content-type"))
        body = await read_limited(request, s.request_limit, "--max-request-bytes")
        call = decode_embeddings(body, s.max_inputs, s.max_input_chars)
        label = task_label(pipeline.registry, call.model)
        _, head = await pipeline.head(call.model, None)
        check_embedding_task(call, head, pipeline.registry.engine.backbone.spec.hidden_size)
        outcome = await pipeline.run(call.model, call.texts, None)
    except (ServerError, PatchError) as err:
        state.metrics.count_request("openai", label, status_of(err, "openai"), started)
        raise
    content = encode_embeddings(call, outcome.predictions, outcome.tokens)
    state.metrics.count_request("openai", call.model, 200, started)
    return Response(content, media_type="application/json")


@router.get("/models", dependencies=[ReaderAuth])
async def models(state: StateDep):
    """Every task, as OpenAI lists models."""
    registry = state.ready().registry
    return {"object": "list", "data": [model_entry(registry, t) for t in registry.tasks()]}


@router.get("/models/{task}", dependencies=[ReaderAuth])
async def model(task: TaskName, state: StateDep):
    """One task, as OpenAI describes a model."""
    return model_entry(state.ready().registry, task)


def model_entry(registry: Registry, task: str) -> dict:
    """A task as an OpenAI model object (`created`: when its active version was written)."""
    info = registry.version(task, registry.active_version(task))
    return {
        "id": task,
        "object": "model",
        "created": created_seconds(info.created_at),
        "owned_by": "bitpatch",
        "kind": info.meta.get("kind", ""),
    }


def created_seconds(stamp: str) -> int:
    """Unix seconds of an ISO timestamp (0 when the patch recorded none)."""
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
