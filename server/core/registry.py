"""The registry: every stored version of each task, which one is active, and which are served.

Engine keys are `task@version`. A request takes a Lease at admission, pinning the version
active then. Only active, leased and recently used versions are resident in the engine; the
others are known by their summary (hash, size, metadata) and loaded on demand.

Two locks: `_lock` guards the in-memory maps and is only ever held for dictionary work (the
event loop takes it for leases); `_writes` serialises uploads, activation and deletion across
their store I/O, which runs on worker threads. Rollouts (reading, routing, writing) are in
server/core/registry_rollouts.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...patches.engine import Engine, TaskHead
from ...patches.patch_file import (
    PatchError,
    PatchFile,
    check_patch,
    patch_metadata,
    read_patch,
    sha256_bytes,
)
from ..errors import (
    InvalidTaskName,
    RolloutConflict,
    UnknownTask,
    UnknownVersion,
    VersionActive,
)
from ..store.base import Changes, PatchStore, TaskRecord, valid_task_name
from .registry_rollouts import RegistryRollouts
from .rollouts import Rollout

log = logging.getLogger(__name__)
RECENT_VERSIONS = 16  # non-active versions kept resident after a pinned request used them


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
class Lease:
    """A request's pin on one task version while it is queued and computed."""

    task: str
    version: int
    key: str
    head: TaskHead
    shadow: int | None = None  # the version the task's rollout runs beside this request
    routed: bool = False  # the version was chosen by a live rollout


def engine_key(task: str, version: int) -> str:
    """The engine's name for one task version."""
    return f"{task}@{version}"


def check_task_name(task: str) -> None:
    """InvalidTaskName unless the name could be stored."""
    if not valid_task_name(task):
        raise invalid_task_name(task)


def invalid_task_name(task: str) -> InvalidTaskName:
    """The error for a name that could never be stored, saying what a valid one is."""
    return InvalidTaskName(
        f"task name {task!r} is not valid: use 1-64 characters from a-z, 0-9, "
        "'_', '.', '-', starting with a letter or digit"
    )


class WriteLock:
    """The lock around this process's store writes, counting how often it was taken: a record
    read without it is stale if a write took it meanwhile."""

    def __init__(self):
        self._lock = threading.Lock()
        self.taken = 0

    def __enter__(self) -> WriteLock:
        self._lock.acquire()
        self.taken += 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


class Registry(RegistryRollouts):
    """Uploads, activation, deletion and leases over a PatchStore and an Engine."""

    def __init__(self, store: PatchStore, engine: Engine, keep_versions: int | None = None):
        self.store, self.engine, self.keep_versions = store, engine, keep_versions
        self._lock = threading.Lock()
        self._writes = WriteLock()
        self._versions: dict[str, dict[int, VersionInfo]] = {}
        self._active: dict[str, int] = {}
        self._leases: dict[str, int] = {}  # engine key -> requests holding it
        self._recent: OrderedDict[str, None] = OrderedDict()  # resident non-active keys
        self._rollouts: dict[str, Rollout] = {}  # as the store holds them (live or ended)
        self.changes = Changes(0, set())  # where this process stands in the store's log
        self.skipped = 0  # stored objects refused (corrupt, foreign, half-written)
        self.synced_at = time.time()  # when this process last caught up with the store

    # ---- start-up -------------------------------------------------------------------------
    def load(self) -> None:
        """Index every stored version and serve each task's active one; skip (and log) corrupt
        or foreign files."""
        self.changes = self.store.changes(None)  # before the scan: later changes are re-read
        for task in self.store.tasks():
            record = self.store.record(task)
            if record is None:
                continue
            infos = self._index(task, record.versions, {})
            active = self._serve_first(task, self._active_candidates(record.active, infos))
            if active is None:
                continue
            if record.active not in (None, active):
                log.error(
                    "event=active_version_unusable task=%s version=%s fallback=%s",
                    task,
                    record.active,
                    active,
                )
            self._versions[task] = infos
            self._active[task] = active
            self._apply_rollout(task, record.rollout)
        log.info("event=registry_loaded tasks=%d", len(self._active))

    def _index(self, task: str, versions: list[int], known: dict) -> dict[int, VersionInfo]:
        """Index entries of `versions`: known ones kept, new ones summarized (bad ones left out)."""
        infos = {v: known.get(v) or self._summary(task, v) for v in versions}
        return {v: info for v, info in infos.items() if info is not None}

    @staticmethod
    def _active_candidates(active: int | None, infos: dict[int, VersionInfo]) -> list[int]:
        newest_first = sorted(infos, reverse=True)
        return ([active] if active in infos else []) + [v for v in newest_first if v != active]

    def _summary(self, task: str, version: int) -> VersionInfo | None:
        """A stored version's index entry, or None (logged) if unreadable or foreign."""
        try:
            info = summarize(version, self.store.read(task, version))
        except (OSError, PatchError, UnknownVersion) as err:
            self._skipped(task, version, err)
            return None
        if info.meta.get("backbone_sha256") != self.engine.backbone.spec.sha256:
            self._skipped(task, version, "foreign backbone")
            return None
        return info

    def _skipped(self, task: str, version: int, why: object) -> None:
        self.skipped += 1
        log.error("event=patch_skipped task=%s version=%s error=%s", task, version, why)

    def _serve_first(self, task: str, versions: list[int]) -> int | None:
        """Register the first of `versions` that validates; its number, or None."""
        for version in versions:
            if self.engine.is_registered(engine_key(task, version)):
                return version
            try:
                self.engine.register(engine_key(task, version), self._read_patch(task, version))
                return version
            except (OSError, PatchError, UnknownVersion) as err:
                self._skipped(task, version, err)
        return None

    def _read_patch(self, task: str, version: int) -> PatchFile:
        return read_patch(self.store.read(task, version), self.engine.backbone.spec)

    # ---- reads ----------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Task names with an active version."""
        return sorted(self._active)

    def has_task(self, task: str) -> bool:
        """Whether a task with that name exists (O(1), for the request path)."""
        return task in self._active

    def active_version(self, task: str) -> int:
        """The active version number."""
        self._require_task(task)
        return self._active[task]

    def versions(self, task: str) -> dict[int, VersionInfo]:
        """All stored versions of a task."""
        with self._lock:
            self._require_task(task)
            return dict(self._versions[task])

    def version(self, task: str, version: int) -> VersionInfo:
        """One stored version."""
        with self._lock:
            return self._require_version(task, version)

    def _require_task(self, task: str) -> None:
        if task not in self._active:
            check_task_name(task)  # a name that could never be stored says so
            raise UnknownTask(
                f"no task named {task!r}; GET /tasks lists tasks, PUT "
                f"/tasks/{task}/patch creates it"
            )

    def _require_version(self, task: str, version: int) -> VersionInfo:
        self._require_task(task)
        info = self._versions[task].get(version)
        if info is None:
            raise UnknownVersion(
                f"task {task!r} has no version {version}; it has {sorted(self._versions[task])}"
            )
        return info

    # ---- writes (serialised; each leaves the store and engine consistent) -----------------
    def upload(self, task: str, data: bytes, activate: bool = True) -> tuple[VersionInfo, bool]:
        """Validate and store a new version, active unless `activate` is False (a candidate;
        a task's first version is always active); identical bytes return the existing one.
        The bytes are decoded, fit-checked and hashed once; the store and the engine take the
        checked patch as it is (the task name was checked at the edge)."""
        checked = check_patch(data, self.engine.backbone.spec)
        if checked.patch.task != task:
            raise PatchError(
                f"metadata 'task' is {checked.patch.task!r} but the upload is for {task!r}; "
                f"PUT it to /tasks/{checked.patch.task}/patch or retrain with --task {task}",
                key="task",
            )
        if (same := self._same_bytes(task, checked.sha256)) is not None:
            return same, False
        self.engine.check_outputs(checked)
        with self._writes:
            if (same := self._same_bytes(task, checked.sha256)) is not None:
                return same, False
            # stored and made active in one store write: the check forward above ran every
            # check that registering does
            if not activate and task not in self._active:  # another replica may have made it
                self._refresh(task, self.store.record(task))
            activate = activate or task not in self._active
            version, created = self.store.add_version(task, data, checked.sha256, activate)
            if not created:  # another process stored these bytes first
                self._refresh(task, self.store.record(task))
                return self.version(task, version), False
            info = VersionInfo(version, checked.sha256, len(data), checked.meta)
            if activate:
                self.engine.register(engine_key(task, version), checked)
            with self._lock:
                self._versions.setdefault(task, {})[version] = info
                if activate:
                    self._switch_active(task, version)
                    self._rollouts.pop(task, None)  # activation ends a rollout
            self._prune(task, keep=version)
        return info, True

    def _current(self, task: str, version: int | None = None) -> VersionInfo | None:
        """The version (or just the task) as the store holds it now: a replica that has not
        yet synced another's upload looks it up before answering 404 (caller holds _writes)."""
        check_task_name(task)
        with self._lock:
            known = task in self._active and (version is None or version in self._versions[task])
        if not known:
            self._refresh(task, self.store.record(task))
        if version is None:
            self.versions(task)  # UnknownTask if the store has none either
            return None
        return self.version(task, version)

    def _same_bytes(self, task: str, digest: str) -> VersionInfo | None:
        with self._lock:
            stored = self._versions.get(task, {}).values()
            return next((info for info in stored if info.sha256 == digest), None)

    def activate(self, task: str, version: int) -> VersionInfo:
        """Make a stored version active (rollback or forward)."""
        with self._writes:
            info = self._current(task, version)
            if self._active[task] != version:
                self.make_resident(task, version)
                self.store.set_active(task, version)
                with self._lock:
                    self._switch_active(task, version)
                    self._rollouts.pop(task, None)  # activation ends a rollout
        return info

    def _switch_active(self, task: str, version: int) -> None:
        """Caller holds _lock."""
        previous = self._active.get(task)
        self._active[task] = version
        self._recent.pop(engine_key(task, version), None)
        if previous is not None and previous != version:
            self._drop_if_unused(task, previous)

    def delete_version(self, task: str, version: int) -> None:
        """Delete a non-active version."""
        with self._writes:
            self._current(task, version)
            if self._active[task] == version:
                raise VersionActive(
                    f"version {version} is the active version of {task!r}; activate "
                    f"another version first, or DELETE /tasks/{task} to remove the task"
                )
            if version in self._rollout_versions(task):
                raise RolloutConflict(
                    f"version {version} is in the rollout of {task!r}; end it first "
                    f"(DELETE /tasks/{task}/rollout)",
                    code="version_in_rollout",
                )
            self.store.delete_version(task, version)
            with self._lock:
                del self._versions[task][version]
                self._recent.pop(engine_key(task, version), None)
                self._drop_if_unused(task, version)

    def delete_task(self, task: str) -> None:
        """Delete a task and every version."""
        with self._writes:
            self._current(task)
            self.store.delete_task(task)
            with self._lock:
                versions = self._versions.pop(task)
                del self._active[task]
                self._rollouts.pop(task, None)
                for version in versions:
                    self._recent.pop(engine_key(task, version), None)
                    self._drop_if_unused(task, version)

    def _prune(self, task: str, keep: int) -> None:
        """Delete the oldest versions beyond --keep-versions (never the active one, the
        rollout's, or `keep`: the version just uploaded)."""
        if self.keep_versions is None:
            return
        stored = sorted(self._versions[task])
        excess = len(stored) - self.keep_versions
        kept = {self._active[task], keep, *self._rollout_versions(task)}
        for version in [v for v in stored if v not in kept][: max(0, excess)]:
            self.store.delete_version(task, version)
            with self._lock:
                del self._versions[task][version]
                self._drop_if_unused(task, version)
            log.info("event=version_pruned task=%s version=%d", task, version)

    def _drop_if_unused(self, task: str, version: int) -> None:
        """Caller holds _lock."""
        key = engine_key(task, version)
        unused = self._leases.get(key, 0) == 0 and key not in self._recent
        if unused and self._active.get(task) != version:
            self.engine.unregister(key)

    # ---- following the store --------------------------------------------------------------
    def sync(self) -> int:
        """Apply what other processes changed in the store since the last call; the number of
        tasks looked at (cheap when nothing changed: one read of the store's change log)."""
        changes = self.store.changes(self.changes)
        tasks = changes.tasks
        if tasks is None:  # too far behind the log: look at everything
            tasks = set(self.store.tasks()) | set(self._active)
        for task in sorted(tasks):
            taken = self._writes.taken
            record = self.store.record(task)  # read before taking the write lock ...
            with self._writes:
                if self._writes.taken != taken + 1:  # ... unless a write of ours came between
                    record = self.store.record(task)
                self._refresh(task, record)
        self.changes, self.synced_at = changes, time.time()
        return len(tasks)

    def _refresh(self, task: str, record: TaskRecord | None) -> None:
        """Make this process's view of one task what the store holds (caller holds _writes)."""
        if record is None:
            if task in self._active:
                self._forget(task)
            return
        infos = self._index(task, record.versions, self._versions.get(task, {}))
        current = self._active.get(task)
        wanted = record.active if record.active in infos else current
        if wanted not in infos:
            wanted = max(infos, default=None)
        active = self._serve_first(task, [wanted] if wanted is not None else [])
        if active is None:
            return  # nothing servable: keep what this process serves now
        with self._lock:
            gone = set(self._versions.get(task, {})) - set(infos)
            self._versions[task] = infos
            self._switch_active(task, active)
            self._apply_rollout(task, record.rollout)
            for version in gone:
                self._recent.pop(engine_key(task, version), None)
                self._drop_if_unused(task, version)
        if active != current:
            log.info("event=synced task=%s version=%d", task, active)

    def _forget(self, task: str) -> None:
        """Drop a task another process deleted (caller holds _writes)."""
        with self._lock:
            versions = self._versions.pop(task, {})
            self._active.pop(task, None)
            self._rollouts.pop(task, None)
            for version in versions:
                self._recent.pop(engine_key(task, version), None)
                self._drop_if_unused(task, version)
        log.info("event=synced task=%s deleted=true", task)

    # ---- leases ---------------------------------------------------------------------------
    def lease(
        self, task: str, version: int | None = None, route_key: Callable[[], str] | None = None
    ) -> Lease | None:
        """Pin a named version for one request, else the one the task's rollout routes
        `route_key` to (the active one without a rollout); None if that version is stored
        but not resident (`make_resident` it off the event loop, then lease again)."""
        with self._lock:
            shadow, routed = None, False
            if version is None:
                version, shadow = self.route(task, route_key)
                rollout = self._rollouts.get(task)
                routed = route_key is not None and rollout is not None and rollout.live
            self._require_version(task, version)  # UnknownTask or UnknownVersion
            key = engine_key(task, version)
            head = self.engine.state.heads.get(key)
            if head is None:
                return None
            self._leases[key] = self._leases.get(key, 0) + 1
            if key in self._recent:
                self._recent.move_to_end(key)
            return Lease(task, version, key, head, shadow, routed)

    def make_resident(self, task: str, version: int) -> None:
        """Blocking: read, validate and serve a stored version; it stays while recently used."""
        key = engine_key(task, version)
        if self.engine.is_registered(key):
            return
        patch = self._read_patch(task, version)
        with self._lock:
            self._require_version(task, version)  # not deleted meanwhile
            self.engine.register(key, patch)
            if self._active[task] != version:
                self._remember(key)

    def _remember(self, key: str) -> None:
        """Keep a non-active key resident among the most recent ones (caller holds _lock)."""
        self._recent[key] = None
        while len(self._recent) > RECENT_VERSIONS:
            old, _ = self._recent.popitem(last=False)
            task, version = old.rsplit("@", 1)
            self._drop_if_unused(task, int(version))

    def release(self, lease: Lease) -> None:
        """Unpin; a version no longer active or recent leaves the engine with its last lease."""
        with self._lock:
            left = self._leases.get(lease.key, 0) - 1
            if left > 0:
                self._leases[lease.key] = left
                return
            self._leases.pop(lease.key, None)
            self._drop_if_unused(lease.task, lease.version)
