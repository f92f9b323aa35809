"""Run the server with uvicorn."""

from __future__ import annotations

import uvicorn

from ..patches.engine import MultiTaskEngine
from .app import create_app
from .logs import configure_logging
from .settings import Settings


def serve(settings: Settings, engine_factory=MultiTaskEngine) -> None:
    """Blocking: serve until SIGINT/SIGTERM; admitted requests finish first."""
    configure_logging(settings.log_level)
    app = create_app(settings, engine_factory)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
