"""The benchmarks' server launcher: bitpatch.testing's, plus `design` to serve one of the
engine designs of bench/designs.py through bench/alt_server.py."""

from __future__ import annotations

import os
from pathlib import Path

from bitpatch import testing
from bitpatch.testing import MotoServer, free_port, started_together

REPO = str(Path(__file__).resolve().parents[1])  # where `bench` is importable from

__all__ = ["MotoServer", "ServerProcess", "free_port", "started_together"]


class ServerProcess(testing.ServerProcess):
    """`bitpatch serve`, or (with `design`) the same HTTP layer on a bench engine design."""

    def __init__(self, backbone, store, *extra: str, design: str | None = None, env=None, **kw):
        if design is None:
            super().__init__(backbone, store, *extra, env=env, **kw)
            return
        path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
        entry = ("bench.alt_server", "--design", design)
        env = {"PYTHONPATH": path, **(env or {})}
        super().__init__(backbone, store, *extra, env=env, entry=entry, **kw)
