"""OpenAI-compatible routes: `POST /v1/embeddings` for embedding tasks and `GET /v1/models`.
Errors take OpenAI's shape (see server/http/edge.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response

from ...core.registry import Registry
from ...errors import UnknownTask, UnknownVersion
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
from ...http.schemas import EmbeddingsRequest
from ..adapter import KEY_HEADER, serve
from ..native.request import check_json_type
from .embeddings import EmbeddingsAdapter

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
    pipeline = state.ready()
    adapter = EmbeddingsAdapter(pipeline.registry.engine.backbone.spec.hidden_size)
    count = counted(request, adapter.api)
    check_json_type(request.headers.get("content-type"))
    limits = state.settings.limits
    body = await read_limited(request, limits.request)
    source = (body, request.headers.get(KEY_HEADER))
    content = await serve(adapter, pipeline, source, limits, count, terms_of(request, state))
    return Response(content, media_type="application/json")


@router.get("/models", dependencies=[ReaderAuth])
async def models(
    request: Request, state: StateDep, limit: PageLimit = PAGE_SIZE, after: PageAfter = ""
):
    """Tasks as OpenAI lists models, in name order, `limit` at a time, with the fields of
    OpenAI's paged lists (`has_more`, `first_id`, `last_id`: the next page is `after=last_id`)."""
    registry = state.ready().registry
    page = registry.task_page(limit, after, keep=caller_of(request).sees)
    data = [e for e in (model_entry_or_none(registry, t) for t in page.names) if e is not None]
    return {
        "object": "list",
        "data": data,
        "has_more": page.next is not None,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


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


def model_entry_or_none(registry: Registry, task: str) -> dict | None:
    """A listing's model object (None for a task deleted while the page was read)."""
    try:
        return model_entry(registry, task)
    except (UnknownTask, UnknownVersion):
        return None


def created_seconds(stamp: str) -> int:
    """Unix seconds of an ISO timestamp (0 when the patch recorded none)."""
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
