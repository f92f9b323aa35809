"""Liveness, readiness, server info and Prometheus metrics."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Literal

import torch
from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ... import __version__
from ...patches.tuning import kernel_cache_caps
from ..core.batch_history import RECENT_BATCHES
from .deps import PAGE_SIZE, PageAfter, PageLimit, ReaderAuth, StateDep, caller_of
from .edge import REPLICA

router = APIRouter()


@router.get("/healthz")
async def healthz():
    """Alive (the process answers)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep):
    """200 once the backbone and store are loaded; 503 before."""
    return {"status": "ready", "tasks": state.ready().registry.task_count()}


@router.get("/info")
async def info(state: StateDep):
    """Backbone identity, dtype, device and version."""
    pipeline = state.ready()
    registry = pipeline.registry
    backbone = registry.engine.backbone
    on_gpu = backbone.device.type == "cuda"
    return {
        "backbone": backbone.spec.name,
        "backbone_sha256": backbone.spec.sha256,
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "device": str(backbone.device),
        "forward": registry.engine.forward_name,
        "forward_kernel": registry.engine.forward_kernel,
        "cudnn_attention": on_gpu and torch.backends.cuda.cudnn_sdp_enabled(),
        "kernel_cache": kernel_cache_caps(),
        "bitpatch_version": __version__,
        "replica": REPLICA,
        "torch_version": torch.__version__,
        "workers": state.plan.workers,
        "threads_per_worker": state.plan.threads_per_worker,
        "lone_forward_threads": state.plan.lone_threads or state.plan.threads_per_worker,
        "express_rows": pipeline.batcher.express_rows,
        "gil_switch_ms": round(sys.getswitchinterval() * 1000, 3),
        "max_batch_size": state.settings.max_batch_size,
        "max_inputs": state.settings.max_inputs,
        "max_request_bytes": state.settings.limits.request.size,
        "store": registry.store.url,
        "sync_interval": state.settings.sync_interval,
        "store_generation": registry.changes.generation,
        "tasks": registry.task_count(),
        "resident_versions": registry.resident_count(),
        "max_resident": registry.max_resident,
        "loaded_from": registry.loaded_from,
    }


@router.get("/metrics")
async def metrics(state: StateDep):
    """Prometheus text exposition."""
    m = state.metrics
    if state.pipeline is not None:
        m.queue_rows.set(state.pipeline.batcher.queued_rows)
        m.sync_lag.set(max(0.0, time.time() - state.pipeline.registry.synced_at))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/stats/batches")
async def recent_batches(
    state: StateDep,
    after: Annotated[int, Query(ge=0, description="only forwards with a greater id")] = 0,
    limit: Annotated[int, Query(ge=1, le=RECENT_BATCHES)] = RECENT_BATCHES,
):
    """The most recent forwards (oldest first): rows, distinct tasks, row lengths, time."""
    batcher = state.ready().batcher
    batches = batcher.history.after(after, limit)
    return {"last_id": batcher.history.last_id(), "batches": batches}


@router.get("/stats/traffic", dependencies=[ReaderAuth])
async def traffic(
    request: Request,
    state: StateDep,
    top: Annotated[int, Query(ge=1, le=100, description="how many of the busiest tasks")] = 10,
):
    """Live traffic: 5-second slots of the last 15 minutes, the last minute's summary and the
    busiest tasks (requests/s, p50/p95 ms, errors, rows and tasks per forward, queue)."""
    queued = state.ready().batcher.queued_rows
    return state.metrics.traffic.snapshot(queued, top, caller_of(request).sees)


@router.get("/stats/tasks", dependencies=[ReaderAuth])
async def task_counts(
    request: Request,
    state: StateDep,
    limit: PageLimit = PAGE_SIZE,
    after: PageAfter = "",
    sort: Annotated[
        Literal["name", "requests", "errors", "rows", "p99_ms"],
        Query(description="name order, or the largest figure first"),
    ] = "name",
):
    """Every task's counts since this process started (requests, errors, rows, per-status
    counts, p50/p95/p99 latency from the histogram buckets, uploads, activations), a page at a
    time; `labelled` names the tasks with their own /metrics series now."""
    state.ready()
    return state.metrics.tasks_seen.page(limit, after or None, sort, caller_of(request).sees)
