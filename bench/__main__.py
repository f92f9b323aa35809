"""`python -m bench SUITE [--quick]` from the repository root: micro, server, replicas,
protocols, peers, uploads, rollouts, console, soak, scale, tenancy, gpu."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from bitpatch.patches.tuning import bound_kernel_caches
from bitpatch.server.settings import Settings

from .micro import format_rows, run_micro


def main() -> None:
    """Parse and run."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "suite",
        choices=[
            "micro",
            "server",
            "cost",
            "replicas",
            "protocols",
            "peers",
            "uploads",
            "rollouts",
            "console",
            "soak",
            "scale",
            "tenancy",
            "gpu",
        ],
        help="micro: offline forwards (every forward backend on GLUE batches, then mixed vs single "
        "task and bias swapping); server: HTTP load on real servers; replicas: servers "
        "sharing a store (folder, S3); cost: server CPU per request (a section of server); "
        "protocols: the native API, v2 REST and v2 gRPC under "
        "one load; peers: bitpatch beside PEFT LoRA and Infinity; uploads: patch uploads/s of "
        "8 clients and where an upload's time goes; rollouts: the cost of a 100%% shadow; console: "
        "the web console's load time in headless Chromium (--out: screenshots too); soak: 30 "
        "minutes of traffic and writes, flat memory/fds/threads, no error, no lost write; scale: "
        "1,000 to 50,000 tasks on one replica (start-up, memory, metrics, bulk push); tenancy: a "
        "noisy neighbour (fair vs arrival-order batching) and overload with deadlines; gpu: a "
        "CUDA host",
    )
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--reps", type=int, default=20, help="micro: repetitions")
    parser.add_argument(
        "--dtype", default="auto", help="server, cost, rollouts: dtype of the servers"
    )
    parser.add_argument("--minutes", type=float, default=None, help="soak: its length")
    parser.add_argument("--threads", type=int, default=None, help="micro: torch threads")
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON (and PNG)")
    parser.add_argument(
        "--against",
        default=None,
        help="cost: also run git revision REF's server, rounds interleaved with this checkout's",
    )
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    # offline measurements run with the kernel caches the server uses
    bound_kernel_caches(Settings.model_fields["kernel_cache"].default)
    if args.suite == "micro":
        if args.threads:  # e.g. 1: what each of the server's two CPU workers runs with
            torch.set_num_threads(args.threads)
        from .backends import (
            backends_markdown,
            run_backends,
            server_forwards,
            short_batches,
            start_times,
        )

        backends = run_backends(reps=1 if args.quick else max(3, args.reps // 4))
        backends["starts"] = start_times()
        backends["short"] = short_batches(reps=1 if args.quick else 5)
        backends["servers"] = server_forwards(1.5 if args.quick else 8.0, 1 if args.quick else 4)
        print(backends_markdown(backends))
        print()
        rows = run_micro(reps=2 if args.quick else args.reps)
        print(format_rows(rows))
        save(args.out, "micro.json", {"backends": backends, "micro": rows})
    elif args.suite == "replicas":
        from .replicas import replicas_markdown, run_replicas

        results = run_replicas(args.quick)
        print(replicas_markdown(results))
        save(args.out, "replicas.json", results)
    elif args.suite == "uploads":
        from .uploads import run_uploads, uploads_markdown

        results = run_uploads(args.quick)
        print(uploads_markdown(results))
        save(args.out, "uploads.json", results)
    elif args.suite == "rollouts":
        from .rollouts import rollouts_markdown, run_rollouts

        results = run_rollouts(args.quick, args.dtype)
        print(rollouts_markdown(results))
        save(args.out, "rollouts.json", results)
    elif args.suite == "soak":
        from .soak import run_soak, soak_markdown

        results = run_soak(args.quick, args.minutes)
        print(soak_markdown(results))
        save(args.out, "soak.json", results)
        if results["verdict"] != "pass":
            raise SystemExit(f"soak failed: {results['missed']} {results['error_examples']} "
                             f"{results['lost_writes'][:5]}")  # fmt: skip
    elif args.suite == "scale":
        from .scale import run_scale, scale_markdown

        results = run_scale(args.quick)
        print(scale_markdown(results))
        save(args.out, "scale.json", results)
    elif args.suite == "tenancy":
        from .tenancy import run_tenancy, tenancy_markdown

        results = run_tenancy(args.quick)
        print(tenancy_markdown(results))
        save(args.out, "tenancy.json", results)
    elif args.suite == "console":
        from .console import console_markdown, run_console

        results = run_console(args.quick, args.out)
        print(console_markdown(results))
        save(args.out, "console.json", results)
    elif args.suite == "protocols":
        from .protocols import protocols_markdown, run_protocols

        results = run_protocols(args.quick)
        print(protocols_markdown(results))
        save(args.out, "protocols.json", results)
    elif args.suite == "cost":
        import tempfile

        from .report import cost_lines
        from .server_bench import BenchConfig, per_request_cost
        from .servers import PatchSource

        source = PatchSource()
        with tempfile.TemporaryDirectory(prefix="bitpatch-cost-") as tmp:
            cfg = BenchConfig(quick=args.quick, dtype=args.dtype)
            results = {"cost": per_request_cost(cfg, source, Path(tmp))}
        print("\n".join(cost_lines(results)))
        if args.against:
            from .cost import compare_revisions

            rounds = 2 if args.quick else 6
            results["against"] = compare_revisions(
                args.against, cfg.seconds, rounds, source, args.dtype
            )
            for name, row in results["against"].items():
                print(
                    f"{name}: {row['server_cpu_ms_per_request']:.2f} ms CPU per request "
                    f"(event loop {row['event_loop_ms_per_request']:.2f}), "
                    f"{row['requests_per_s']:.0f} requests/s"
                )
        save(args.out, "cost.json", results)
    elif args.suite == "peers":
        from .peers import peers_markdown, run_peers

        results = run_peers(args.quick)
        print(peers_markdown(results))
        save(args.out, "peers.json", results)
    elif args.suite == "gpu":
        from .gpu import run_gpu

        results = run_gpu(args.quick)
        print(json.dumps(results, indent=1))
        save(args.out, "gpu.json", results)
    else:
        from .report import markdown, plot
        from .server_bench import BenchConfig, run_all

        results = run_all(BenchConfig(quick=args.quick, dtype=args.dtype))
        print(markdown(results))
        if args.out:
            save(args.out, "results.json", results)
            plot(results, args.out / "server.png")


def save(folder: Path | None, name: str, results: dict) -> None:
    """Write the results as JSON under `folder` (if given)."""
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(results, indent=1))


main()
