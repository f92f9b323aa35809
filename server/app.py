"""create_app(settings): the FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from fastapi import FastAPI

from .. import __version__
from ..patches.tuning import freeze_heap
from .core.follow import follow_store
from .http import console, ops, rollouts, tasks
from .http.edge import OrjsonResponse, install_error_handlers
from .metrics import watch_gc
from .protocols.native import routes as native_routes
from .protocols.openai import routes as openai_routes
from .protocols.v2 import rest as v2_rest
from .protocols.v2.grpc_service import start_grpc
from .settings import Settings
from .state import ServerState

log = logging.getLogger(__name__)
GRPC_GRACE_SECONDS = 25  # within uvicorn's 30 s graceful shutdown


async def _start(state: ServerState) -> None:
    """Load off the event loop, then start batching; a failed load stops the process."""
    try:
        registry = await asyncio.get_running_loop().run_in_executor(state.inference, state.load)
    except Exception as err:
        log.exception("event=startup_failed")
        state.failure = f"{type(err).__name__}: {err}"
        os.kill(os.getpid(), signal.SIGTERM)
        return
    s = state.settings
    sys.setswitchinterval(s.gil_switch_ms / 1000)
    if s.gc_freeze:
        freeze_heap()
    state.start_serving(registry)
    state.following = asyncio.create_task(
        follow_store(registry, state.metrics, s.sync_interval), name="follow-store"
    )
    plan = state.plan
    log.info(
        "event=ready tasks=%d workers=%d threads_per_worker=%d lone_threads=%s express_rows=%d",
        registry.task_count(),
        plan.workers,
        plan.threads_per_worker,
        plan.lone_threads,
        state.pipeline.batcher.express_rows,
    )


def create_app(settings: Settings) -> FastAPI:
    """The app; the backbone loads in the background so /healthz and /readyz answer at once."""
    return app_of(ServerState(settings))


def app_of(state: ServerState) -> FastAPI:
    """The app serving `state` (its engine_factory picks the engine)."""
    settings = state.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        stop_watching_gc = watch_gc(state.metrics.gc_pause)
        grpc_server = await start_grpc(state) if settings.grpc_port else None
        loading = asyncio.create_task(_start(state))
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=GRPC_GRACE_SECONDS)  # in-flight calls finish first
        loading.cancel()
        if state.following is not None:
            state.following.cancel()
        stop_watching_gc()
        if state.pipeline is not None:
            await state.pipeline.batcher.stop()
            state.pipeline.close()

    app = FastAPI(
        title="bitpatch",
        version=__version__,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        description="Many NLP tasks from one frozen backbone, one bias patch each.",
    )
    app.state.server = state
    install_error_handlers(app)
    for module in (native_routes, tasks, rollouts, ops, v2_rest, openai_routes, console):
        app.include_router(module.router)
    return app
