"""Following the store: every --sync-interval, apply what other server processes changed, and
write a snapshot of the index when one is due (server/core/snapshot.py)."""

from __future__ import annotations

import asyncio
import logging

from ..metrics import Metrics
from .registry import Registry

log = logging.getLogger(__name__)


async def follow_store(registry: Registry, metrics: Metrics, interval: float) -> None:
    """Sync until cancelled; a failed pass (store unreachable) is logged and retried, and the
    patches already loaded keep serving meanwhile."""
    metrics.sync_last_success.set(registry.synced_at)
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(registry.sync)
            await asyncio.to_thread(registry.save_snapshot)
        except Exception as err:
            metrics.sync_errors.inc()
            if not failing:
                log.warning("event=sync_failed store=%s error=%s", registry.store.url, err)
            failing = True
            continue
        if failing:
            log.info("event=sync_resumed store=%s", registry.store.url)
        failing = False
        metrics.sync_last_success.set(registry.synced_at)
        metrics.store_skipped.set(registry.skipped)
        metrics.tasks.set(registry.task_count())
        metrics.resident.set(registry.resident_count())
