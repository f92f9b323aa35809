"""The registry: which version of each task is active, kept in the store and served by the engine.

Engine keys are `task@version`. A request takes a Lease at admission, pinning the version
active then; a version leaves the engine once it is neither active nor leased.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from ..patches.engine import MultiTaskEngine, TaskHead
from ..patches.patch_file import PatchError, PatchFile, read_patch, sha256_bytes
from .errors import ApiError
from .store import PatchStore, valid_task_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """One stored version: number, file hash and size, and its patch minus the bias values."""

    version: int
    sha256: str
    size_bytes: int
    patch: PatchFile  # biases dropped: the engine holds the served ones, the store all of them


def describe(version: int, data: bytes, patch: PatchFile) -> VersionInfo:
    """Index entry for a version; keeps metadata and head, not the bias values."""
    return VersionInfo(version, sha256_bytes(data), len(data), replace(patch, biases={}))


@dataclass(frozen=True)
class Lease:
    """A request's pin on one task version while it is queued and computed."""

    task: str
    version: int
    key: str
    head: TaskHead


def engine_key(task: str, version: int) -> str:
    """The engine's name for one task version."""
    return f"{task}@{version}"


class Registry:
    """Uploads, activation, deletion and leases over a PatchStore and a MultiTaskEngine."""

    def __init__(self, store: PatchStore, engine: MultiTaskEngine):
        self.store, self.engine = store, engine
        self._lock = threading.RLock()
        self._versions: dict[str, dict[int, VersionInfo]] = {}
        self._active: dict[str, int] = {}
        self._leases: dict[str, int] = {}  # engine key -> requests holding it

    # ---- start-up -------------------------------------------------------------------------
    def load(self) -> None:
        """Read every task in the store; skip (and log) corrupt or foreign files."""
        for task in self.store.tasks():
            record = self.store.record(task)
            stored = {v: found for v in record.versions if (found := self._read(task, v))}
            if not stored:
                continue
            active = record.active if record.active in stored else max(stored)
            if record.active is not None and record.active != active:
                log.error(
                    "event=active_version_unusable task=%s version=%s fallback=%s",
                    task,
                    record.active,
                    active,
                )
            self.engine.register(engine_key(task, active), stored[active][1])
            self._versions[task] = {v: describe(v, *found) for v, found in stored.items()}
            self._active[task] = active
        log.info("event=registry_loaded tasks=%d", len(self._active))

    def _read(self, task: str, version: int) -> tuple[bytes, PatchFile] | None:
        """A stored version's bytes and validated patch, or None (logged) if unusable."""
        try:
            data = self.store.read(task, version)
            return data, read_patch(data, self.engine.backbone.spec)
        except (OSError, PatchError) as err:
            log.error("event=patch_skipped task=%s version=%s error=%s", task, version, err)
            return None

    def _serve(self, task: str, version: int) -> None:
        """Register a stored version with the engine (read back from the store)."""
        data = self.store.read(task, version)
        self.engine.register(engine_key(task, version), read_patch(data, self.engine.backbone.spec))

    # ---- reads ----------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Task names with an active version."""
        return sorted(self._active)

    def has_task(self, task: str) -> bool:
        """Whether a task with that name exists (O(1), for the request path)."""
        return task in self._active

    def active_version(self, task: str) -> int:
        """The active version number, or 404."""
        self._require_task(task)
        return self._active[task]

    def versions(self, task: str) -> dict[int, VersionInfo]:
        """All stored versions of a task, or 404."""
        self._require_task(task)
        return dict(self._versions[task])

    def _require_task(self, task: str) -> None:
        if not valid_task_name(task):
            raise ApiError(
                422,
                "invalid_task_name",
                f"task name {task!r} is not valid: use 1-64 characters from a-z, 0-9, "
                "'_', '.', '-', starting with a letter or digit",
            )
        if task not in self._active:
            raise ApiError(
                404,
                "unknown_task",
                f"no task named {task!r}; GET /tasks lists tasks, PUT "
                f"/tasks/{task}/patch creates it",
            )

    def _require_version(self, task: str, version: int) -> VersionInfo:
        self._require_task(task)
        info = self._versions[task].get(version)
        if info is None:
            raise ApiError(
                404,
                "unknown_version",
                f"task {task!r} has no version {version}; it has {sorted(self._versions[task])}",
            )
        return info

    # ---- writes (serialised; each leaves the store and engine consistent) -----------------
    def upload(self, task: str, data: bytes) -> tuple[VersionInfo, bool]:
        """Validate and store a new active version; identical bytes return the existing one."""
        if not valid_task_name(task):
            self._require_task(task)
        patch = read_patch(data, self.engine.backbone.spec)
        if patch.task != task:
            raise PatchError(
                f"metadata 'task' is {patch.task!r} but the upload is for {task!r}; "
                f"PUT it to /tasks/{patch.task}/patch or retrain with --task {task}",
                key="task",
            )
        digest = sha256_bytes(data)
        with self._lock:
            for info in self._versions.get(task, {}).values():
                if info.sha256 == digest:
                    return info, False
            version = self.store.add_version(task, data)
            info = describe(version, data, patch)
            self.engine.register(engine_key(task, version), patch)
            self._versions.setdefault(task, {})[version] = info
            self._switch_active(task, version)
        return info, True

    def activate(self, task: str, version: int) -> VersionInfo:
        """Make a stored version active (rollback or forward)."""
        with self._lock:
            info = self._require_version(task, version)
            if self._active[task] != version:
                if not self.engine.is_registered(engine_key(task, version)):
                    self._serve(task, version)
                self._switch_active(task, version)
        return info

    def _switch_active(self, task: str, version: int) -> None:
        self.store.set_active(task, version)
        previous = self._active.get(task)
        self._active[task] = version
        if previous is not None and previous != version:
            self._drop_if_unused(task, previous)

    def delete_version(self, task: str, version: int) -> None:
        """Delete a non-active version (409 for the active one)."""
        with self._lock:
            self._require_version(task, version)
            if self._active[task] == version:
                raise ApiError(
                    409,
                    "version_active",
                    f"version {version} is the active version of {task!r}; activate "
                    "another version first, or DELETE /tasks/{task} to remove the task",
                )
            self.store.delete_version(task, version)
            del self._versions[task][version]
            self._drop_if_unused(task, version)

    def delete_task(self, task: str) -> None:
        """Delete a task and every version."""
        with self._lock:
            self._require_task(task)
            self.store.delete_task(task)
            versions = self._versions.pop(task)
            del self._active[task]
            for version in versions:
                self._drop_if_unused(task, version)

    def _drop_if_unused(self, task: str, version: int) -> None:
        key = engine_key(task, version)
        if self._leases.get(key, 0) == 0 and self._active.get(task) != version:
            self.engine.unregister(key)

    # ---- leases ---------------------------------------------------------------------------
    def acquire(self, task: str, version: int | None = None) -> Lease:
        """Pin the active (or a named) version for one request."""
        with self._lock:
            version = self.active_version(task) if version is None else version
            self._require_version(task, version)
            key = engine_key(task, version)
            if not self.engine.is_registered(key):
                self._serve(task, version)
            self._leases[key] = self._leases.get(key, 0) + 1
            return Lease(task, version, key, self.engine.state.heads[key])

    def release(self, lease: Lease) -> None:
        """Unpin; a version no longer active leaves the engine with its last lease."""
        with self._lock:
            left = self._leases.get(lease.key, 0) - 1
            if left > 0:
                self._leases[lease.key] = left
                return
            self._leases.pop(lease.key, None)
            if lease.task not in self._active or self._active[lease.task] != lease.version:
                self.engine.unregister(lease.key)
