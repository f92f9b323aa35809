"""create_app(settings): the FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal

from fastapi import FastAPI

from .. import __version__
from ..patches.engine import MultiTaskEngine
from . import routes_ops, routes_predict, routes_tasks
from .batcher import Batcher
from .errors import install_error_handlers
from .metrics import watch_gc
from .responses import OrjsonResponse
from .settings import Settings
from .state import ServerState

log = logging.getLogger(__name__)


async def _start(state: ServerState) -> None:
    """Load off the event loop, then start batching; a failed load stops the process."""
    try:
        await asyncio.get_running_loop().run_in_executor(state.inference, state.load)
    except Exception as err:
        log.exception("event=startup_failed")
        state.failure = f"{type(err).__name__}: {err}"
        os.kill(os.getpid(), signal.SIGTERM)
        return
    s = state.settings
    if s.gc_freeze:
        freeze_heap()
    batcher = Batcher(
        state.engine,
        state.metrics,
        s.max_batch_size,
        s.max_wait_ms,
        s.max_queue,
        state.inference,
        state.workers,
        state.lone_threads,
    )
    batcher.start()
    state.batcher = batcher
    log.info(
        "event=ready tasks=%d workers=%d threads_per_worker=%d lone_threads=%s",
        len(state.registry.tasks()),
        state.workers,
        state.threads_per_worker,
        state.lone_threads,
    )


def freeze_heap() -> None:
    """Collect once, then exempt every object alive now from later collections.

    What the server loads (torch, transformers, the app, the registry) lives as long as the
    process; left in the oldest generation, each full collection under traffic walks all of
    it while holding the interpreter lock, and both forwards stall until it ends.
    """
    gc.collect()
    gc.freeze()
    log.info("event=gc_frozen objects=%d", gc.get_freeze_count())


def create_app(settings: Settings, engine_factory=MultiTaskEngine) -> FastAPI:
    """The app; the backbone loads in the background so /healthz and /readyz answer at once.

    `engine_factory` lets benchmarks serve the alternative designs through the same HTTP layer.
    """
    state = ServerState(settings, engine_factory=engine_factory)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        stop_watching_gc = watch_gc(state.metrics.gc_pause)
        loading = asyncio.create_task(_start(state))
        yield
        loading.cancel()
        stop_watching_gc()
        if state.batcher is not None:
            await state.batcher.stop()
        state.tokenize_pool.shutdown(wait=False)

    app = FastAPI(
        title="bitpatch",
        version=__version__,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        description="Many NLP tasks from one frozen backbone, one bias patch each.",
    )
    app.state.server = state
    install_error_handlers(app)
    for module in (routes_predict, routes_tasks, routes_ops):
        app.include_router(module.router)
    return app
