"""Run the server with uvicorn: one process, or --processes N on one port."""

from __future__ import annotations

import logging
import os

import uvicorn

from .app import create_app
from .logs import configure_logging
from .protocols.v2.grpc_service import check_port_free
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
    if settings.grpc_port:
        check_port_free(settings.host, settings.grpc_port)  # a clear error before loading
    settings.tokens  # noqa: B018 - a bad --tokens-file fails here, clearly, before loading
    common = dict(
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        # longer than load balancers keep idle connections (60 s is common): a backend that
        # closes first races the client's next request on that connection (a reset or 502)
        timeout_keep_alive=75,
    )
    if settings.processes == 1:
        uvicorn.run(create_app(settings), **common)
        return
    export_settings(settings)  # each process builds the same Settings from the environment
    target = "bitpatch.server.main:app_from_environment"
    uvicorn.run(target, factory=True, workers=settings.processes, **common)


def export_settings(settings: Settings) -> None:
    """Put every setting into BITPATCH_* variables; each process gets its share of the cores."""
    values = settings.model_dump()
    if values["threads"] is None:
        values["threads"] = max(1, (os.cpu_count() or 1) // settings.processes)
    for name, value in values.items():
        if value is not None:
            os.environ[f"BITPATCH_{name.upper()}"] = str(value)


def app_from_environment():
    """The app of one of --processes N server processes."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
