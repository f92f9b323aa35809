"""Reading a benchmark server's statistics and feeding it patches."""

from __future__ import annotations

import time

import httpx

from bitpatch.patches.backbone import load_backbone

from .micro import random_patches

STAT_SERIES = (
    "bitpatch_batch_rows",
    "bitpatch_batch_tasks",
    "bitpatch_batch_fill",
    "bitpatch_forward_seconds",
)


def metric_samples(url: str):
    """Every sample the server's /metrics exposes (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        yield from family.samples


def server_stats(url: str) -> dict[str, float]:
    """Sums and counts of the batch histograms, from /metrics."""
    out = {}
    for sample in metric_samples(url):
        base = sample.name.rsplit("_", 1)[0]
        if base in STAT_SERIES and sample.name.endswith(("_sum", "_count")):
            out[sample.name] = sample.value
    return out


def batch_summary(before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Mean rows, tasks and fill per forward; share of wall time spent in forwards."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = max(delta.get("bitpatch_batch_rows_count", 0.0), 1.0)
    return {
        "rows_per_batch": delta.get("bitpatch_batch_rows_sum", 0.0) / batches,
        "tasks_per_batch": delta.get("bitpatch_batch_tasks_sum", 0.0) / batches,
        "fill": delta.get("bitpatch_batch_fill_sum", 0.0) / batches,
        "forward_busy": delta.get("bitpatch_forward_seconds_sum", 0.0) / seconds,
    }


def recent_batches(url: str, after: int = 0) -> tuple[list[dict], int]:
    """The server's forwards recorded after id `after`, and the newest id."""
    reply = httpx.get(f"{url}/stats/batches", params={"after": after}, timeout=30).json()
    return reply["batches"], reply["last_id"]


class PatchSource:
    """Random patches for the default backbone, serialised once (task names t0, t1, ...)."""

    def __init__(self):
        self.backbone = load_backbone("default", dtype="float32", device="cpu")

    def patch_bytes(self, task: str, seed: int) -> bytes:
        """One patch for `task`; different seeds give different versions."""
        patch = random_patches(self.backbone, 1, seed=seed)[0]
        patch.task = task
        return patch.to_bytes()

    def upload(self, url: str, n_tasks: int, start: int = 0) -> float:
        """PUT t{start}..t{start+n-1}; returns seconds per upload."""
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(start, start + n_tasks):
                reply = http.put(f"/tasks/t{i}/patch", content=self.patch_bytes(f"t{i}", i))
                reply.raise_for_status()
        return (time.perf_counter() - started) / max(n_tasks, 1)
