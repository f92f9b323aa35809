"""The `bitpatch` command: serve, push, rollout, train, eval, inspect, export, import."""

from __future__ import annotations

import argparse
import logging
import sys

import httpx

from . import __version__
from .model_commands import add_export_parser, add_import_parser, add_push_parser
from .rollout_commands import add_rollout_parser
from .serve_command import add_serve_parser
from .train_commands import add_eval_parser, add_inspect_parser, add_train_parser


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    parser = argparse.ArgumentParser(prog="bitpatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bitpatch {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_serve_parser,
        add_push_parser,
        add_rollout_parser,
        add_train_parser,
        add_eval_parser,
        add_inspect_parser,
        add_export_parser,
        add_import_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse, run, and turn expected errors into one clear line and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from bitpatch.client import BitpatchError

    try:
        code = args.func(args)
    except BitpatchError as err:  # the server refused: its message says why
        print(f"bitpatch {args.command}: the server answered {err}", file=sys.stderr)
        code = 1
    except httpx.HTTPError as err:
        print(f"bitpatch {args.command}: cannot reach the server: {err}", file=sys.stderr)
        code = 1
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"bitpatch {args.command}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
