"""Per-request CPU cost of the server, read from /proc, against the bare forward's CPU per row.

Load: 16 tasks, 32 closed-loop clients, 1 GLUE sentence per request. Server CPU: the process's
user + system time (/proc/<pid>/stat) over the run, divided by the requests answered; split by
thread (/proc/<pid>/task/*/comm): the forward threads (`bp-forward-*`, their OpenMP team
inherits the name), the event loop (the main thread), the tokenizer threads (`bp-tokenize`) and
the rest. Reference: a plain transformers bf16 forward of the same sentences in padded batches
of 16 on 2 torch threads, its process CPU per row.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import collate, encode_inputs

from .loadgen import run_load
from .workload import glue_sentences

SENTENCES = glue_sentences(2048, seed=11)
TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(path: Path) -> float:
    """User + system CPU seconds in a /proc/.../stat file."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the process and of its thread groups."""
    groups = {"forward": 0.0, "event_loop": 0.0, "tokenize": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = stat_cpu(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        if task.name == str(pid):
            groups["event_loop"] += seconds
        elif name.startswith("bp-forward"):
            groups["forward"] += seconds
        elif name.startswith("bp-tokenize"):
            groups["tokenize"] += seconds
        else:
            groups["other"] += seconds
    groups["process"] = stat_cpu(Path(f"/proc/{pid}/stat"))
    return groups


def one_sentence(n_tasks: int):
    """make_request: a random task and one random sentence."""

    def make(rng: random.Random):
        return f"/tasks/t{rng.randrange(n_tasks)}/predict", {"inputs": [rng.choice(SENTENCES)]}

    return make


def server_cost(url: str, pid: int, seconds: float, clients: int = 32, tasks: int = 16) -> dict:
    """Server CPU ms per request under the load, and each thread group's share of it."""
    before = thread_cpu(pid)
    result = asyncio.run(run_load(url, one_sentence(tasks), clients, seconds))
    after = thread_cpu(pid)
    requests = max(len(result.latencies), 1)
    used = {k: after[k] - before[k] for k in after}
    summary = result.summary()
    return {
        "requests_per_s": summary["requests_per_s"],
        "errors": summary["errors"],
        "p50_ms": summary["p50_ms"],
        "server_cpu_ms_per_request": 1000 * used["process"] / requests,
        "shares": {k: used[k] / max(used["process"], 1e-9) for k in used if k != "process"},
        "client_cores": summary["client_cores"],
    }


def bare_forward_cpu_ms_per_row(rows: int = 512, batch_size: int = 16, threads: int = 2) -> float:
    """Process CPU per row of the plain transformers bf16 forward of the load's sentences in
    padded batches of `batch_size` on `threads` torch threads."""
    backbone = load_backbone("default", dtype="bfloat16", device="cpu")
    tokenizer, model = backbone.tokenizer, backbone.model
    sentences = random.Random(5).sample(SENTENCES, rows)
    encoded = encode_inputs(tokenizer, sentences, 128)
    batches = [
        collate(encoded[i : i + batch_size], tokenizer.pad_token_id)
        for i in range(0, rows, batch_size)
    ]
    own = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(**batches[0])  # warm-up
            started = time.process_time()
            for batch in batches:
                model(**batch)
            return 1000 * (time.process_time() - started) / rows
    finally:
        torch.set_num_threads(own)


def package_of(ref: str, root: Path) -> Path:
    """A folder to put first on PYTHONPATH so that `bitpatch` imports from git revision `ref`
    (a worktree of it, laid out as the installed package)."""
    repo = Path(__file__).resolve().parents[1]
    tree, package = root / "tree", root / "pkg" / "bitpatch"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    shutil.copytree(tree / "cli", package)
    for part in ("patches", "server", "trainer"):
        (package / part).symlink_to(tree / part)
    return package.parent


def drop_worktree(root: Path) -> None:
    """Remove the worktree `package_of` made."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "remove", "--force", str(root / "tree")],
        check=False,
        capture_output=True,
    )


def compare_revisions(ref: str, seconds: float, rounds: int, source, dtype: str = "auto") -> dict:
    """Server CPU per request of git revision `ref` and of this checkout, in interleaved rounds
    (the host's speed drifts by ~10% over minutes, so one after the other would mislead)."""
    from .launcher import ServerProcess

    repo = str(Path(__file__).resolve().parents[1])
    out: dict[str, list[dict]] = {ref: [], "this checkout": []}
    with tempfile.TemporaryDirectory(prefix="bitpatch-cost-") as tmp:
        root = Path(tmp)
        env_of = {
            ref: {"PYTHONPATH": f"{package_of(ref, root)}{os.pathsep}{repo}"},
            "this checkout": None,
        }
        try:
            for r in range(rounds):
                for name in (ref, "this checkout") if r % 2 == 0 else ("this checkout", ref):
                    flags = ("--no-demo-patches", "--log-level", "warning")
                    store = root / f"store-{r}-{len(out[name])}-{name.replace(' ', '-')}"
                    with ServerProcess(
                        "default", store, *flags, dtype=dtype, env=env_of[name], log_dir=root
                    ) as server:
                        source.upload(server.url, 16)
                        server_cost(server.url, server.proc.pid, 3)  # warm-up
                        out[name].append(server_cost(server.url, server.proc.pid, seconds))
        finally:
            drop_worktree(root)
    return {name: _mean_cost(runs) for name, runs in out.items()}


def _mean_cost(runs: list[dict]) -> dict:
    keys = ("server_cpu_ms_per_request", "requests_per_s", "p50_ms")
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in keys}
    mean["event_loop_ms_per_request"] = sum(
        r["shares"]["event_loop"] * r["server_cpu_ms_per_request"] for r in runs
    ) / len(runs)
    mean["rounds"] = runs
    return mean
