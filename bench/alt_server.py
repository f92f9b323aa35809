"""`python -m bitpatch.bench.alt_server --design {bitpatch,swap,copies} [serve flags]`."""

from __future__ import annotations

import argparse

from bitpatch.server.main import serve
from bitpatch.server.settings import add_settings_args, settings_from_args

from .designs import DESIGNS


def main() -> None:
    """Serve one design through bitpatch's own HTTP layer."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--design", choices=sorted(DESIGNS), default="bitpatch")
    add_settings_args(parser)
    args = parser.parse_args()
    serve(settings_from_args(args), DESIGNS[args.design])


if __name__ == "__main__":
    main()
