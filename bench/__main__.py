"""`python -m bench SUITE [--quick]`: benchmarks, results as Markdown (and JSON, PNG)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from bitpatch.patches.backbone import bound_kernel_caches
from bitpatch.server.settings import Settings

from .micro import format_rows, run_micro


def main() -> None:
    """Parse and run."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    suites = ["micro", "server", "probe", "sweep", "omp", "biasadd", "mix", "gpu", "report"]
    parser.add_argument("suite", choices=suites)
    parser.add_argument(
        "runs", nargs="*", type=Path, help="report: results.json of full server runs, side by side"
    )
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--reps", type=int, default=20, help="micro: repetitions")
    parser.add_argument("--dtype", default="auto", help="server: dtype of the servers")
    parser.add_argument("--out", type=Path, default=None, help="server: folder for JSON + PNG")
    parser.add_argument(
        "--threads", default=None, help="probe: server --threads; micro: torch threads"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="probe: server env K=V; sweep: the variant's"
    )
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    # offline measurements run with the kernel caches the server uses
    bound_kernel_caches(Settings.model_fields["kernel_cache"].default)
    if args.suite == "micro":
        if args.threads:  # e.g. 1: what each of the server's two CPU workers runs with
            torch.set_num_threads(int(args.threads))
        print(format_rows(run_micro(reps=2 if args.quick else args.reps)))
        return
    if args.suite == "biasadd":
        from .bias_add import compare
        from .bias_add import format_rows as bias_rows

        print(bias_rows(compare()))
        return
    if args.suite == "mix":
        from .offline import batch_mix

        print(json.dumps(batch_mix(args.dtype, 320 if args.quick else 1280), indent=1))
        return
    if args.suite == "report":  # targets of several saved full runs, one column each
        from .report import targets_across

        print(targets_across({p.stem: json.loads(p.read_text()) for p in args.runs}))
        return
    if args.suite == "gpu":  # a CUDA host: docs/BENCHMARKS.md, GPU section
        from .gpu import run_gpu

        gpu_results = run_gpu(args.quick)
        print(json.dumps(gpu_results, indent=1))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu.json").write_text(json.dumps(gpu_results, indent=1))
        return
    if args.suite == "sweep":  # the default server vs a variant (--env), 1 to 64 clients
        from .sweep import sweep, sweep_rows

        env = dict(e.split("=", 1) for e in args.env)
        results = sweep(env, rounds=1 if args.quick else 2, seconds=2 if args.quick else 5)
        print(sweep_rows(results, env))
        return
    if args.suite in ("probe", "omp"):
        from .probe import omp_teams, probe_server

        if args.suite == "omp":
            print(json.dumps(omp_teams(), indent=1))
            return
        extra = ["--threads", args.threads] if args.threads else []
        env = dict(e.split("=", 1) for e in args.env)
        print(json.dumps(probe_server(extra, env), indent=1))
        return
    from .report import markdown, plot
    from .server_bench import BenchConfig, run_all

    results = run_all(BenchConfig(quick=args.quick, dtype=args.dtype))
    print(markdown(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        plot(results, args.out / "server.png")


main()
