"""`bitpatch serve`."""

from __future__ import annotations


def add_serve_parser(sub) -> None:
    """`bitpatch serve` (flags mirror server Settings)."""
    from bitpatch.server.settings import add_settings_args

    p = sub.add_parser("serve", help="run the HTTP server")
    add_settings_args(p)
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    """Build Settings from env + flags and run uvicorn."""
    from bitpatch.server.main import serve
    from bitpatch.server.settings import settings_from_args

    serve(settings_from_args(args))
    return 0
