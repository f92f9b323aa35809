"""Patch management: upload, list, describe, activate, download, delete."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..patches.patch_file import PatchError
from .deps import AdminAuth, StateDep
from .errors import ApiError
from .registry import Registry, VersionInfo
from .schemas import TaskPublic, TasksPublic, UploadPublic, VersionPublic
from .store import valid_task_name

router = APIRouter()
log = logging.getLogger(__name__)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (413) and empty bodies (422)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            "too_large",
            f"the body is {declared} bytes; the limit is {limit} (--max-upload-bytes)",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body exceeds {limit} bytes (--max-upload-bytes)")
        chunks.append(chunk)
    if size == 0:
        raise ApiError(
            422,
            "empty_body",
            "the body is empty; send the patch file's bytes as "
            "application/octet-stream (curl --data-binary @task.safetensors)",
        )
    return b"".join(chunks)


def _task_public(registry: Registry, task: str, with_versions: bool) -> TaskPublic:
    active = registry.active_version(task)
    versions = registry.versions(task)
    patch = versions[active].patch
    listed = [_version_public(info, info.version == active) for _, info in sorted(versions.items())]
    return TaskPublic(
        task=task,
        active_version=active,
        kind=patch.kind,
        labels=patch.labels,
        pooling=patch.pooling,
        max_length=patch.max_length,
        metrics=patch.metrics,
        versions=listed if with_versions else None,
    )


def _version_public(info: VersionInfo, active: bool) -> VersionPublic:
    return VersionPublic(
        version=info.version,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        created_at=info.patch.created_at,
        metrics=info.patch.metrics,
        active=active,
    )


@router.put(
    "/tasks/{task}/patch", status_code=201, response_model=UploadPublic, dependencies=[AdminAuth]
)
async def upload_patch(task: str, request: Request, response: Response, state: StateDep):
    """Upload a bitpatch/1 file: a new immutable version that becomes active (200 if known)."""
    registry, _ = state.ready()
    if not valid_task_name(task):
        registry.versions(task)  # raises the invalid-name error
    data = await read_body(request, state.settings.max_upload_bytes)
    try:
        info, created = await run_in_threadpool(registry.upload, task, data)
    except PatchError as err:
        state.metrics.rejections.labels(err.code).inc()
        log.warning("event=upload_rejected task=%s code=%s error=%s", task, err.code, err)
        raise
    if created:
        state.metrics.uploads.labels(task).inc()
        state.metrics.tasks.set(len(registry.tasks()))
        log.info("event=upload task=%s version=%d sha256=%s", task, info.version, info.sha256)
    response.status_code = 201 if created else 200
    return UploadPublic(
        task=task,
        version=info.version,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        created=created,
        active=registry.active_version(task) == info.version,
        kind=info.patch.kind,
        labels=info.patch.labels,
    )


@router.get("/tasks", response_model=TasksPublic, response_model_exclude_none=True)
async def list_tasks(state: StateDep):
    """Every task with its active version."""
    registry, _ = state.ready()
    return TasksPublic(tasks=[_task_public(registry, t, False) for t in registry.tasks()])


@router.get("/tasks/{task}", response_model=TaskPublic)
async def get_task(task: str, state: StateDep):
    """One task: metadata of the active version and every stored version."""
    registry, _ = state.ready()
    return _task_public(registry, task, True)


@router.post(
    "/tasks/{task}/versions/{version}/activate", response_model=TaskPublic, dependencies=[AdminAuth]
)
async def activate(task: str, version: int, state: StateDep):
    """Make a stored version active (rollback or roll forward)."""
    registry, _ = state.ready()
    await run_in_threadpool(registry.activate, task, version)
    state.metrics.activations.labels(task).inc()
    log.info("event=activate task=%s version=%d", task, version)
    return _task_public(registry, task, True)


@router.get("/tasks/{task}/versions/{version}/patch")
async def download(task: str, version: int, state: StateDep):
    """The stored patch file of one version."""
    registry, _ = state.ready()
    info = registry.versions(task).get(version)
    if info is None:
        raise ApiError(404, "unknown_version", f"task {task!r} has no version {version}")
    data = await run_in_threadpool(registry.store.read, task, version)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{task}-v{version}.safetensors"'},
    )


@router.delete("/tasks/{task}/versions/{version}", dependencies=[AdminAuth])
async def delete_version(task: str, version: int, state: StateDep):
    """Delete a version that is not active (409 for the active one)."""
    registry, _ = state.ready()
    await run_in_threadpool(registry.delete_version, task, version)
    log.info("event=delete_version task=%s version=%d", task, version)
    return {"task": task, "deleted_version": version}


@router.delete("/tasks/{task}", dependencies=[AdminAuth])
async def delete_task(task: str, state: StateDep):
    """Delete a task and all its versions."""
    registry, _ = state.ready()
    await run_in_threadpool(registry.delete_task, task)
    state.metrics.tasks.set(len(registry.tasks()))
    log.info("event=delete_task task=%s", task)
    return {"task": task, "deleted": True}
