"""The shapes and times of the most recent forwards (`GET /stats/batches`).

What batches the live traffic forms (rows, distinct tasks, each row's length) is what decides
the forward's cost; operators read it to tune --max-batch-size / --max-wait-ms, and the
benchmark replays exactly these batches offline to measure the server's own overhead.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

RECENT_BATCHES = 4096  # forwards kept (a few minutes of full load on a CPU)


class BatchHistory:
    """A bounded, thread-safe log of recent forwards, each with an increasing id."""

    def __init__(self, size: int = RECENT_BATCHES):
        self._batches: deque[dict] = deque(maxlen=size)
        self._ids = itertools.count(1)

    def record(
        self,
        lengths: list[int],
        task_rows: dict[str, int],
        forward_s: float,
        kinds: dict[str, int],
    ) -> None:
        """One finished forward: its rows' real lengths (tokens), rows per task and per task
        kind, and time."""
        self._batches.append(
            {
                "id": next(self._ids),
                "finished_at": time.time(),
                "rows": len(lengths),
                "tasks": len(task_rows),
                "task_rows": task_rows,
                "kinds": kinds,
                "lengths": lengths,
                "padded_length": max(lengths),
                "forward_ms": round(1000 * forward_s, 3),
            }
        )

    def after(self, batch_id: int, limit: int) -> list[dict]:
        """The oldest `limit` recorded forwards whose id is greater than `batch_id`."""
        newer = [b for b in list(self._batches) if b["id"] > batch_id]
        return newer[:limit]

    def last_id(self) -> int:
        """Id of the newest recorded forward (0 before the first)."""
        try:
            return self._batches[-1]["id"]
        except IndexError:
            return 0
