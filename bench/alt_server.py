"""`python -m bench.alt_server --design {bitpatch,swap,copies} [serve flags]`: one of the
designs of bench/designs.py behind bitpatch's own HTTP layer (ServerState's engine seam)."""

from __future__ import annotations

import argparse

import uvicorn

from bitpatch.server.app import app_of
from bitpatch.server.logs import configure_logging
from bitpatch.server.settings import add_settings_args, settings_from_args
from bitpatch.server.state import ServerState

from .designs import DESIGNS


def main() -> None:
    """Serve one design."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--design", choices=sorted(DESIGNS), default="bitpatch", help="engine")
    add_settings_args(parser)
    args = parser.parse_args()
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    app = app_of(ServerState(settings, DESIGNS[args.design]))
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
