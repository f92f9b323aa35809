"""Run the server with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .logs import configure_logging
from .settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Blocking: serve until SIGINT/SIGTERM; admitted requests finish first."""
    configure_logging(settings.log_level)
    if settings.admin_token is None:
        log.warning(
            "event=no_admin_token anyone who reaches %s:%d can upload, activate and delete "
            "patches; set BITPATCH_ADMIN_TOKEN (or --admin-token) to a long random string",
            settings.host,
            settings.port,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
