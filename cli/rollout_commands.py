"""`bitpatch rollout TASK`: start a canary or shadow, promote, end, or show the figures."""

from __future__ import annotations

import argparse
import json


def add_rollout_parser(sub) -> None:
    """`bitpatch rollout TASK --canary V --percent P | --shadow S --percent Q | --promote |
    --end | --status`."""
    p = sub.add_parser("rollout", help="roll a stored version out to a share of a task's traffic")
    p.add_argument("task", help="the task")
    p.add_argument("--canary", type=int, metavar="V", help="answer --percent of requests with V")
    p.add_argument("--shadow", type=int, metavar="S", help="run S beside --percent of requests")
    p.add_argument("--percent", type=float, help="the share (0 < P <= 100) of requests")
    p.add_argument(
        "--shadow-percent",
        type=float,
        default=100.0,
        help="the shadow's share when --canary and --shadow are both given (default 100)",
    )
    p.add_argument(
        "--guard-metric",
        choices=("accuracy", "agreement"),
        help="end the rollout when the candidate falls behind on this metric",
    )
    p.add_argument("--min-rows", type=int, default=100, help="rows the guard waits for")
    p.add_argument("--max-drop", type=float, default=2.0, help="points the guard tolerates")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--promote", action="store_true", help="make the candidate active")
    action.add_argument("--end", action="store_true", help="end the rollout")
    action.add_argument("--status", action="store_true", help="show the rollout and figures")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    p.add_argument(
        "--token", default=None, help="admin token (default: $BITPATCH_ADMIN_TOKEN, if set)"
    )
    p.set_defaults(func=run_rollout)


def rollout_body(args: argparse.Namespace) -> dict:
    """The PUT body the flags describe; ValueError when they describe none."""
    if args.canary is None and args.shadow is None:
        raise ValueError(
            "give --canary V or --shadow S (with --percent), or --promote, --end, --status"
        )
    if args.percent is None:
        raise ValueError("--percent P is required with --canary or --shadow")
    body: dict = {}
    if args.canary is not None:
        body["canary"] = {"version": args.canary, "percent": args.percent}
    if args.shadow is not None:
        share = args.shadow_percent if args.canary is not None else args.percent
        body["shadow"] = {"version": args.shadow, "percent": share}
    if args.guard_metric:
        body["guard"] = {
            "metric": args.guard_metric,
            "min_rows": args.min_rows,
            "max_drop": args.max_drop,
        }
    return body


def run_rollout(args: argparse.Namespace) -> int:
    """Do what the flags ask and print the server's answer."""
    from bitpatch.client import Client, admin_token

    client = Client(args.url, token=admin_token(args.token))
    if args.status:
        answer = client.rollout(args.task)
    elif args.promote:
        answer = client.promote(args.task)
    elif args.end:
        answer = client.end_rollout(args.task)
    else:
        answer = client.set_rollout(args.task, rollout_body(args))
    print(json.dumps(answer))
    return 0
