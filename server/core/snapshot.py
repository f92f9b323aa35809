"""Registry snapshots: every task's index (its versions with hash, size and metadata, the
version served, the rollout) at one generation of the store's change log, in one gzipped JSON
object, so a starting replica reads one object and the changes since instead of every file.

A snapshot is a cache, never the truth. It is written only while no change is pending; a reader
uses it only while the change log still reaches back to its generation, and re-reads every task
changed since; one of another backbone or format, or a damaged one, is passed over (logged).
Versions are immutable, so an index entry stays true for as long as its version exists.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ...patches.patch_file import patch_metadata, sha256_bytes
from ..store.base import LOG_LENGTH, PatchStore, parse_snapshot_names, snapshot_name

log = logging.getLogger(__name__)
FORMAT = 1
SNAPSHOT_SECONDS = 30.0  # a process writes at most one snapshot this often, and only after changes
# ... unless the log ran this far past the newest snapshot (a start from a snapshot needs the log
# to reach back to it), then at most every HURRY_SECONDS
HURRY_GENERATIONS = LOG_LENGTH // 4
HURRY_SECONDS = 3.0


@dataclass(frozen=True)
class VersionInfo:
    """One stored version: number, file hash and size, and its metadata block."""

    version: int
    sha256: str
    size_bytes: int
    meta: Mapping[str, str]

    @property
    def created_at(self) -> str:
        """When the patch was written (metadata)."""
        return self.meta.get("created_at", "")

    @property
    def metrics(self) -> dict:
        """The dev metrics the trainer recorded."""
        return json.loads(self.meta.get("metrics", "{}"))

    @property
    def labels(self) -> list[str]:
        """Label names (empty for regression)."""
        return json.loads(self.meta.get("labels", "[]"))


def summarize(version: int, data: bytes) -> VersionInfo:
    """Index entry for a version (framing checked, tensors not decoded)."""
    return VersionInfo(version, sha256_bytes(data), len(data), patch_metadata(data))


@dataclass(frozen=True)
class IndexedTask:
    """One task as a snapshot holds it: its usable versions, the one served, its rollout."""

    versions: dict[int, VersionInfo]
    active: int
    rollout: dict | None


def backbone_tag(sha256: str) -> str:
    """The part of a backbone's hash that names its snapshots."""
    return sha256[:16]


def encode_snapshot(generation: int, backbone_sha256: str, tasks: dict[str, IndexedTask]) -> bytes:
    """The gzipped JSON of a snapshot."""
    body = {
        "format": FORMAT,
        "generation": generation,
        "backbone_sha256": backbone_sha256,
        "tasks": {
            task: {
                "active": entry.active,
                "rollout": entry.rollout,
                "versions": [
                    [info.version, info.sha256, info.size_bytes, dict(info.meta)]
                    for info in entry.versions.values()
                ],
            }
            for task, entry in tasks.items()
        },
    }
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), compresslevel=1)


def decode_snapshot(data: bytes, backbone_sha256: str) -> tuple[int, dict[str, IndexedTask]]:
    """(generation, tasks) of a snapshot; ValueError when it is damaged or not for this
    backbone and format."""
    try:
        body = json.loads(gzip.decompress(data))
        if body.get("format") != FORMAT or body.get("backbone_sha256") != backbone_sha256:
            raise ValueError("another format or backbone")
        tasks = {task: _task_of(entry) for task, entry in body["tasks"].items()}
        return int(body["generation"]), tasks
    except (OSError, EOFError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"damaged: {type(err).__name__}: {err}") from None


def _task_of(entry: dict) -> IndexedTask:
    versions = {
        int(v): VersionInfo(int(v), str(digest), int(size), dict(meta))
        for v, digest, size, meta in entry["versions"]
    }
    active = int(entry["active"])
    if active not in versions:
        raise ValueError(f"active version {active} is not among its versions")
    rollout = entry.get("rollout")
    return IndexedTask(versions, active, rollout if isinstance(rollout, dict) else None)


def newest_snapshot(store: PatchStore, backbone_sha256: str) -> tuple[int, dict] | None:
    """The newest readable snapshot of this backbone in the store: (generation, tasks)."""
    tag = backbone_tag(backbone_sha256)
    names = [n for _, t, n in parse_snapshot_names(store.snapshot_names()) if t == tag]
    for name in reversed(names):
        data = store.read_snapshot(name)
        if data is None:
            continue  # deleted by a newer writer meanwhile
        try:
            return decode_snapshot(data, backbone_sha256)
        except ValueError as err:
            log.error("event=snapshot_unreadable name=%s error=%s", name, err)
    return None


class SnapshotWriter:
    """When this process writes a snapshot: after changes, at most every SNAPSHOT_SECONDS
    (HURRY_SECONDS when the log runs away from the newest one), never while a change is
    pending, and not when another process wrote a newer one."""

    def __init__(self, store: PatchStore, backbone_sha256: str, written: int = -1):
        self.store, self.backbone_sha256 = store, backbone_sha256
        self.written = written  # the generation of the newest snapshot known to exist
        self.last_try = 0.0

    def due(self, generation: int, now: float | None = None) -> bool:
        """Whether a snapshot at `generation` should be written now (no change pending)."""
        now = time.monotonic() if now is None else now
        behind, waited = generation - self.written, now - self.last_try
        if behind >= HURRY_GENERATIONS:
            return waited >= HURRY_SECONDS
        return behind > 0 and waited >= SNAPSHOT_SECONDS

    def write(self, generation: int, tasks: dict[str, IndexedTask]) -> bool:
        """Store the snapshot unless a newer one exists; whether it was written."""
        self.last_try = time.monotonic()
        tag = backbone_tag(self.backbone_sha256)
        stored = [g for g, t, _ in parse_snapshot_names(self.store.snapshot_names()) if t == tag]
        if stored and max(stored) >= generation:
            self.written = max(stored)
            return False
        started = time.perf_counter()
        data = encode_snapshot(generation, self.backbone_sha256, tasks)
        self.store.write_snapshot(snapshot_name(generation, tag), data, tag)
        self.written = generation
        log.info(
            "event=snapshot_written generation=%d tasks=%d bytes=%d seconds=%.3f",
            generation,
            len(tasks),
            len(data),
            time.perf_counter() - started,
        )
        return True
