"""Patch management: upload, list, describe, activate, download, delete."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ...patches.patch_file import PatchError
from ..core.registry import Registry, VersionInfo
from ..errors import InvalidRequest, UnknownTask, UnknownVersion, UnsupportedMediaType
from ..limits import BodyLimit
from .deps import (
    PAGE_SIZE,
    AdminAuth,
    PageAfter,
    PageLimit,
    ReaderAuth,
    StateDep,
    TaskName,
    VersionNumber,
    caller_of,
    read_limited,
)
from .schemas import TaskPublic, TasksPublic, UploadPublic, VersionPublic

router = APIRouter()
log = logging.getLogger(__name__)


UPLOAD_TYPES = ("application/octet-stream", "application/vnd.bitpatch", "")


async def read_patch_body(request: Request, limit: BodyLimit) -> bytes:
    """The uploaded patch's bytes: octet-stream, within --max-upload-bytes, not empty."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in UPLOAD_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type is {media!r}; send the patch file's bytes as "
            "'Content-Type: application/octet-stream' (curl --data-binary @task.safetensors)"
        )
    data = await read_limited(request, limit)
    if not data:
        raise InvalidRequest(
            "the body is empty; send the patch file's bytes as application/octet-stream "
            "(curl --data-binary @task.safetensors)",
            code="empty_body",
        )
    return data


def _task_public(registry: Registry, task: str, with_versions: bool) -> TaskPublic:
    active = registry.active_version(task)
    versions = registry.versions(task)
    info = versions[active]
    listed = [_version_public(v, v.version == active) for _, v in sorted(versions.items())]
    return TaskPublic(
        task=task,
        active_version=active,
        kind=info.meta["kind"],
        labels=info.labels,
        pooling=info.meta["pooling"],
        max_length=int(info.meta["max_length"]),
        inputs=info.meta.get("inputs", ""),
        metrics=info.metrics,
        created_at=info.created_at,
        size_bytes=info.size_bytes,
        thresholds=_thresholds(info),
        trainer=json.loads(info.meta.get("trainer", "null")),
        versions=listed if with_versions else None,
    )


def _thresholds(info: VersionInfo) -> list[float] | None:
    """multi_label: each label's threshold (0.5 unless the patch says otherwise)."""
    if info.meta["kind"] != "multi_label":
        return None
    if "thresholds" in info.meta:
        return json.loads(info.meta["thresholds"])
    return [json.loads(info.meta.get("threshold", "0.5"))] * len(info.labels)


def _version_public(info: VersionInfo, active: bool) -> VersionPublic:
    return VersionPublic(
        version=info.version,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        created_at=info.created_at,
        metrics=info.metrics,
        active=active,
    )


PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/tasks/{task}/patch",
    status_code=201,
    response_model=UploadPublic,
    dependencies=[AdminAuth],
    openapi_extra=PATCH_BODY,
)
async def upload_patch(
    task: TaskName,
    request: Request,
    response: Response,
    state: StateDep,
    activate: Annotated[
        bool,
        Query(
            description="make the new version active (false: store a candidate for a "
            "rollout; a task's first version is always active)"
        ),
    ] = True,
):
    """Upload a bitpatch/1 file: a new immutable version, active unless activate=false (200
    if these bytes are stored already)."""
    registry = state.ready().registry
    data = await read_patch_body(request, state.settings.limits.upload)
    try:
        info, created = await run_in_threadpool(registry.upload, task, data, activate)
    except PatchError as err:
        state.metrics.rejections.labels(err.code).inc()
        log.warning("event=upload_rejected task=%s code=%s error=%s", task, err.code, err)
        raise
    if created:
        state.metrics.task_event("uploads", task)
        state.metrics.tasks.set(registry.task_count())
        log.info(
            "event=upload task=%s version=%d sha256=%s token=%s",
            task,
            info.version,
            info.sha256,
            caller_of(request).name,
        )
    response.status_code = 201 if created else 200
    return UploadPublic(
        task=task,
        version=info.version,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        created=created,
        active=registry.active_version(task) == info.version,
        kind=info.meta["kind"],
        labels=info.labels,
    )


@router.get(
    "/tasks",
    response_model=TasksPublic,
    response_model_exclude_none=True,
    dependencies=[ReaderAuth],
)
async def list_tasks(
    request: Request,
    state: StateDep,
    limit: PageLimit = PAGE_SIZE,
    after: PageAfter = "",
    prefix: Annotated[str, Query(description="only names that start with this")] = "",
    kind: Annotated[str, Query(description="only tasks of this kind")] = "",
):
    """Tasks with their active version, in name order, a page at a time (only the token's
    tasks for a scoped token)."""
    registry, caller = state.ready().registry, caller_of(request)

    def keep(task: str) -> bool:
        return caller.sees(task) and (not kind or _kind_of(registry, task) == kind)

    page = registry.task_page(limit, after, prefix, keep)
    listed = [p for p in (_listed(registry, t) for t in page.names) if p is not None]
    return TasksPublic(tasks=listed, total=page.total, next=page.next)


def _kind_of(registry: Registry, task: str) -> str | None:
    """The active version's kind (None for a task deleted meanwhile)."""
    try:
        return registry.version(task, registry.active_version(task)).meta["kind"]
    except UnknownTask:
        return None


def _listed(registry: Registry, task: str) -> TaskPublic | None:
    """A task's listing entry (None for a task deleted while the page was read)."""
    try:
        return _task_public(registry, task, False)
    except (UnknownTask, UnknownVersion):
        return None


@router.get("/tasks/{task}", response_model=TaskPublic, dependencies=[ReaderAuth])
async def get_task(task: TaskName, state: StateDep):
    """One task: metadata of the active version and every stored version."""
    registry = state.ready().registry
    return _task_public(registry, task, True)


@router.post(
    "/tasks/{task}/versions/{version}/activate", response_model=TaskPublic, dependencies=[AdminAuth]
)
async def activate(task: TaskName, version: VersionNumber, request: Request, state: StateDep):
    """Make a stored version active (rollback or roll forward)."""
    registry = state.ready().registry
    await run_in_threadpool(registry.activate, task, version)
    state.metrics.task_event("activations", task)
    token = caller_of(request).name
    log.info("event=activate task=%s version=%d token=%s", task, version, token)
    return _task_public(registry, task, True)


@router.get("/tasks/{task}/versions/{version}/patch", dependencies=[ReaderAuth])
async def download(task: TaskName, version: VersionNumber, state: StateDep):
    """The stored patch file of one version."""
    registry = state.ready().registry
    registry.version(task, version)
    data = await run_in_threadpool(registry.store.read, task, version)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{task}-v{version}.safetensors"'},
    )


@router.delete("/tasks/{task}/versions/{version}", dependencies=[AdminAuth])
async def delete_version(task: TaskName, version: VersionNumber, request: Request, state: StateDep):
    """Delete a version that is not active (409 for the active one)."""
    registry = state.ready().registry
    await run_in_threadpool(registry.delete_version, task, version)
    token = caller_of(request).name
    log.info("event=delete_version task=%s version=%d token=%s", task, version, token)
    return {"task": task, "deleted_version": version}


@router.delete("/tasks/{task}", dependencies=[AdminAuth])
async def delete_task(task: TaskName, request: Request, state: StateDep):
    """Delete a task and all its versions."""
    registry = state.ready().registry
    await run_in_threadpool(registry.delete_task, task)
    state.metrics.tasks_seen.forget(task)
    state.metrics.tasks.set(registry.task_count())
    log.info("event=delete_task task=%s token=%s", task, caller_of(request).name)
    return {"task": task, "deleted": True}
