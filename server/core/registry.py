"""The registry: every stored version of each task, which one is active, and which are served.

Engine keys are `task@version`. A request takes a Lease at admission, pinning the version
active then. Every stored version is known by its summary (hash, size, metadata); a version is
resident in the engine (its biases decoded) from its first use: active versions stay while
recently used (at most `max_resident` of them, when set), others while leased or among the
RECENT_VERSIONS last used. A start reads the store's newest snapshot and the changes since
(server/core/snapshot.py), else indexes every task, and decodes no patch.

Two locks: `_lock` guards the in-memory maps and is only ever held for dictionary work (the
event loop takes it for leases); `_writes` serialises uploads, activation and deletion across
their store I/O, which runs on worker threads. Rollouts (reading, routing, writing) are in
server/core/registry_rollouts.py.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...patches.engine import Engine, TaskHead
from ...patches.patch_file import (
    PatchError,
    PatchFile,
    check_patch,
    read_patch,
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
from .snapshot import IndexedTask, SnapshotWriter, VersionInfo, newest_snapshot, summarize

log = logging.getLogger(__name__)
RECENT_VERSIONS = 16  # non-active versions kept resident after a pinned request used them
SCAN_THREADS = 16  # tasks indexed at once when a start reads the whole store (I/O bound)

__all__ = ["Lease", "Registry", "VersionInfo", "engine_key", "summarize"]


@dataclass(frozen=True)
class TaskPage:
    """One page of a task listing: its names, the cursor of the next page (None: the last),
    and how many tasks the listing has in all."""

    names: list[str]
    next: str | None
    total: int


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


def unknown_task(task: str) -> InvalidTaskName | UnknownTask:
    """The error for a task this server does not hold (or a name it could never hold)."""
    if not valid_task_name(task):
        return invalid_task_name(task)
    return UnknownTask(
        f"no task named {task!r}; GET /tasks lists tasks, PUT /tasks/{task}/patch creates it"
    )


def invalid_task_name(task: str) -> InvalidTaskName:
    """The error for a name that could never be stored, saying what a valid one is."""
    return InvalidTaskName(
        f"task name {task!r} is not valid: use 1-64 characters from a-z, 0-9, "
        "'_', '.', '-', starting with a letter or digit"
    )


class WriteLock:
    """The lock around this process's store writes, counting how often it was taken: a record
    read without it is stale if a write held it at the time or took it meanwhile."""

    def __init__(self):
        self._lock = threading.Lock()
        self.taken = 0

    def mark(self) -> int | None:
        """Before an unlocked read: a mark to compare once the lock is held (None: a write
        is under way now, so the read may already be stale)."""
        return None if self._lock.locked() else self.taken

    def unchanged_since(self, mark: int | None) -> bool:
        """Holding the lock: whether no write ran since `mark` was taken."""
        return mark is not None and self.taken == mark + 1

    def __enter__(self) -> WriteLock:
        self._lock.acquire()
        self.taken += 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


class Registry(RegistryRollouts):
    """Uploads, activation, deletion and leases over a PatchStore and an Engine."""

    def __init__(
        self,
        store: PatchStore,
        engine: Engine,
        keep_versions: int | None = None,
        max_resident: int = 0,
    ):
        self.store, self.engine, self.keep_versions = store, engine, keep_versions
        self.max_resident = max_resident  # active versions kept decoded (0: all used ones)
        self._lock = threading.Lock()
        self._writes = WriteLock()
        self._versions: dict[str, dict[int, VersionInfo]] = {}
        self._active: dict[str, int] = {}
        self._leases: dict[str, int] = {}  # engine key -> requests holding it
        self._recent: OrderedDict[str, None] = OrderedDict()  # resident non-active keys
        self._resident: OrderedDict[str, None] = OrderedDict()  # resident active keys, LRU
        self._rollouts: dict[str, Rollout] = {}  # as the store holds them (live or ended)
        self.changes = Changes(0, set())  # where this process stands in the store's log
        self.skipped = 0  # stored objects refused (corrupt, foreign, half-written)
        self.synced_at = time.time()  # when this process last caught up with the store
        self.snapshots = SnapshotWriter(store, engine.backbone.spec.sha256)
        self.loaded_from = "store"  # how the last start indexed: "snapshot" or "store"

    # ---- start-up -------------------------------------------------------------------------
    def load(self) -> None:
        """Index every task from the store's newest snapshot and the changes since it, else by
        reading every task (skipping, and logging, corrupt or foreign files); patches are
        decoded at first use."""
        started = time.perf_counter()
        self.changes = self.store.changes(None)  # before any read: later changes are re-read
        if not self._restore_snapshot():
            self._scan_store()
        log.info(
            "event=registry_loaded tasks=%d from=%s seconds=%.3f",
            len(self._active),
            self.loaded_from,
            time.perf_counter() - started,
        )

    def _restore_snapshot(self) -> bool:
        """Take the newest snapshot and re-read what changed since; False when there is none
        the change log still reaches back to."""
        found = newest_snapshot(self.store, self.engine.backbone.spec.sha256)
        if found is None:
            return False
        generation, tasks = found
        since = self.store.changes(Changes(generation, set()))
        if since.tasks is None:
            log.info("event=snapshot_outdated generation=%d log=%d", generation, since.generation)
            return False
        for task, entry in tasks.items():
            self._versions[task] = entry.versions
            self._active[task] = entry.active
            self._apply_rollout(task, entry.rollout)
        with self._writes:
            for task in sorted(since.tasks):
                self._refresh(task, self.store.record(task))
        self.changes, self.loaded_from = since, "snapshot"
        self.snapshots.written = generation
        return True

    def _scan_store(self) -> None:
        """Index every task in the store, SCAN_THREADS at a time."""
        with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="bp-scan") as pool:
            for task, record, infos in pool.map(self._scan_task, self.store.tasks()):
                candidates = self._active_candidates(record.active, infos) if record else []
                if not candidates:
                    continue
                if record.active not in (None, candidates[0]):
                    self._unusable_active(task, record.active, candidates[0])
                self._versions[task] = infos
                self._active[task] = candidates[0]
                self._apply_rollout(task, record.rollout)
        self.loaded_from = "store"

    def _scan_task(self, task: str) -> tuple[str, TaskRecord | None, dict[int, VersionInfo]]:
        record = self.store.record(task)
        return task, record, self._index(task, record.versions, {}) if record else {}

    @staticmethod
    def _unusable_active(task: str, version: int, fallback: int) -> None:
        log.error(
            "event=active_version_unusable task=%s version=%s fallback=%s", task, version, fallback
        )

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

    # ---- snapshots ------------------------------------------------------------------------
    def save_snapshot(self, force: bool = False) -> bool:
        """Blocking: write a snapshot of the index if one is due (`force`: whatever the time
        since the last); whether one was written."""
        changes = self.changes  # read before the maps: the maps hold at least this generation
        if not self._active or changes.pending:
            return False
        if not (force or self.snapshots.due(changes.generation)):
            return False
        with self._lock:
            tasks = {
                task: IndexedTask(
                    dict(self._versions[task]),
                    active,
                    rollout.to_json() if (rollout := self._rollouts.get(task)) else None,
                )
                for task, active in self._active.items()
            }
        return self.snapshots.write(changes.generation, tasks)

    # ---- reads ----------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Task names with an active version."""
        return sorted(self._active)

    def task_page(
        self,
        limit: int,
        after: str = "",
        prefix: str = "",
        keep: Callable[[str], bool] | None = None,
    ) -> TaskPage:
        """Task names in name order after `after`, starting with `prefix` (and passing `keep`),
        at most `limit` of them."""
        names = [t for t in self.tasks() if t.startswith(prefix)]
        if keep is not None:
            names = [t for t in names if keep(t)]
        start = bisect.bisect_right(names, after) if after else 0
        page = names[start : start + limit]
        more = start + limit < len(names)
        return TaskPage(page, page[-1] if more and page else None, len(names))

    def active_or_none(self, task: str) -> int | None:
        """The active version, or None for a task deleted meanwhile (listings)."""
        return self._active.get(task)

    def task_count(self) -> int:
        """How many tasks have an active version."""
        return len(self._active)

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
            raise unknown_task(task)

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
        key = engine_key(task, version)
        self._recent.pop(key, None)
        if self.engine.is_registered(key):
            self._keep_active(key)
        if previous is not None and previous != version:
            self._resident.pop(engine_key(task, previous), None)
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
                self._unkeep(engine_key(task, version))
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
                    self._unkeep(engine_key(task, version))
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
                self._unkeep(engine_key(task, version))
                self._drop_if_unused(task, version)
            log.info("event=version_pruned task=%s version=%d", task, version)

    def _drop_if_unused(self, task: str, version: int) -> None:
        """Unregister a version no request holds and no residency list keeps (caller holds
        _lock)."""
        key = engine_key(task, version)
        kept = key in self._recent or key in self._resident
        if self._leases.get(key, 0) == 0 and not kept:
            self.engine.unregister(key)

    def _unkeep(self, key: str) -> None:
        """Take a key off both residency lists (caller holds _lock)."""
        self._recent.pop(key, None)
        self._resident.pop(key, None)

    # ---- following the store --------------------------------------------------------------
    def sync(self) -> int:
        """Apply what other processes changed in the store since the last call; the number of
        tasks looked at (cheap when nothing changed: one read of the store's change log)."""
        changes = self.store.changes(self.changes)
        tasks = changes.tasks
        if tasks is None:  # too far behind the log: look at everything
            tasks = set(self.store.tasks()) | set(self._active)
        for task in sorted(tasks):
            mark = self._writes.mark()
            record = self.store.record(task)  # read before taking the write lock ...
            with self._writes:
                if not self._writes.unchanged_since(mark):  # ... unless a write of ours ran
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
        if wanted is None:
            return  # nothing servable: keep what this process serves now
        active = wanted
        if current is not None and self.engine.is_registered(engine_key(task, current)):
            # a task in use switches only to a version that decodes (loaded before the switch)
            active = self._serve_first(task, [wanted])
            if active is None:
                return
        with self._lock:
            gone = set(self._versions.get(task, {})) - set(infos)
            self._versions[task] = infos
            self._switch_active(task, active)
            self._apply_rollout(task, record.rollout)
            for version in gone:
                self._unkeep(engine_key(task, version))
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
                self._unkeep(engine_key(task, version))
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
            elif version == self._active[task]:
                self._keep_active(key)
            return Lease(task, version, key, head, shadow, routed)

    def make_resident(self, task: str, version: int) -> None:
        """Blocking: read, validate and serve a stored version; it stays while recently used.
        An active version that no longer decodes gives way to the task's next usable one
        (logged; the store is left as it is). Never called holding `_writes`."""
        key = engine_key(task, version)
        if self.engine.is_registered(key):
            return
        try:
            patch = self._read_patch(task, version)
        except (OSError, PatchError, UnknownVersion) as err:
            if self._active.get(task) != version:
                raise
            self._replace_unusable(task, version, err)
            return
        with self._lock:
            self._require_version(task, version)  # not deleted meanwhile
            if not self.engine.is_registered(key):
                self.engine.register(key, patch)
            if self._active[task] == version:
                self._keep_active(key)
            else:
                self._remember(key)

    def _replace_unusable(self, task: str, version: int, err: Exception) -> None:
        """Serve the task's next usable version in place of its active one, which failed to
        decode; forget the task when none is usable."""
        self._skipped(task, version, err)
        with self._writes:
            with self._lock:
                if self._active.get(task) != version:
                    return  # replaced meanwhile
                rest = {v: info for v, info in self._versions[task].items() if v != version}
                self._versions[task] = rest
            fallback = self._serve_first(task, self._active_candidates(None, rest))
            if fallback is None:
                self._forget(task)
                return
            self._unusable_active(task, version, fallback)
            with self._lock:
                self._switch_active(task, fallback)

    def _keep_active(self, key: str) -> None:
        """Mark a resident active key as just used; beyond `max_resident`, the least recently
        used ones leave the engine once no request holds them (caller holds _lock)."""
        self._resident[key] = None
        self._resident.move_to_end(key)
        while self.max_resident and len(self._resident) > self.max_resident:
            old, _ = self._resident.popitem(last=False)
            task, version = old.rsplit("@", 1)
            self._drop_if_unused(task, int(version))

    def resident_count(self) -> int:
        """Versions decoded in the engine now."""
        return len(self.engine.state.heads)

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
