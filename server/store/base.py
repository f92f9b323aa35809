"""The patch store interface: immutable version files, a per-task active pointer, and a change
log that lets every server process sharing the store follow it cheaply.

The registry talks only to `PatchStore`; the backends are a folder (store/folder.py)
and any S3-compatible object store (store/s3.py). Version numbers are claimed with an
exclusive create, never read-then-write; identical bytes map to the version that holds them.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

TASK_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
LOG_LENGTH = 1024  # changes the log keeps; a process further behind rescans the whole store
PENDING_SECONDS = 60.0  # a change begun and not done is re-read this long (its writer may be dead)
SNAPSHOT_NAME = re.compile(r"g([0-9]{12})-([0-9a-f]{16})\.json\.gz")
SNAPSHOTS_KEPT = 2  # snapshots of one backbone kept; older ones are deleted by the writer


def valid_task_name(task: str) -> bool:
    """Task names: lower-case letters, digits, '_', '.', '-'; 1-64 chars; no path tricks."""
    return TASK_NAME.fullmatch(task) is not None and task not in (".", "..")


@dataclass(frozen=True)
class TaskRecord:
    """What the store knows of a task: its stored versions, the active one, and its rollout
    (the JSON the registry wrote; None: none was ever set or an activation cleared it)."""

    task: str
    versions: list[int]
    active: int | None
    rollout: dict | None = None


def pointer_rollout(pointer: dict) -> dict | None:
    """The rollout a task pointer holds (None when absent or not an object)."""
    rollout = pointer.get("rollout")
    return rollout if isinstance(rollout, dict) else None


def with_active(pointer: dict | None, version: int, rollout: dict | None) -> dict:
    """The pointer moved to `version`; activation replaces the rollout (None: no rollout)."""
    moved = {**(pointer or {}), "active": version}
    if rollout is None:
        moved.pop("rollout", None)
    else:
        moved["rollout"] = rollout
    return moved


def with_rollout(pointer: dict | None, rollout: dict | None) -> dict:
    """The pointer with its rollout replaced (None: removed); the active version kept."""
    changed = dict(pointer or {})
    if rollout is None:
        changed.pop("rollout", None)
    else:
        changed["rollout"] = rollout
    return changed


@dataclass(frozen=True)
class Changes:
    """Where a process stands in the change log: the generation it has seen and which tasks
    changed since its last look (None: too far behind, rescan every task). `pending`: tasks
    whose latest change was begun and not yet done, and until when they are re-read at every
    look (a writer killed between its writes leaves no "done"; readers still see its state)."""

    generation: int
    tasks: set[str] | None
    token: object = None  # the backend's cheap "nothing changed" check (ETag, file stat)
    pending: dict[str, float] = field(default_factory=dict)

    def unchanged(self, now: float | None = None) -> Changes:
        """The answer when the log did not change: nothing new, the pending tasks again."""
        now = time.time() if now is None else now
        pending = {task: until for task, until in self.pending.items() if until > now}
        return Changes(self.generation, set(pending), self.token, pending)


def new_log() -> dict:
    """An empty change log."""
    return {"generation": 0, "changes": []}


def log_append(log: dict, task: str, phase: str, change: str, now: float | None = None) -> dict:
    """The log with one more entry (the oldest beyond LOG_LENGTH dropped): `phase` "begin"
    (before a change's first write; with its time) or "done" (after its last), `change` the
    change's id. Entries are [generation, task, phase, change, time?]; logs written before
    phases existed hold [generation, task] (a done change)."""
    generation = int(log.get("generation", 0)) + 1
    entry = [generation, task, phase, change]
    if phase == "begin":
        entry.append(round(time.time() if now is None else now, 3))
    changes = [*log.get("changes", []), entry][-LOG_LENGTH:]
    return {"generation": generation, "changes": changes}


def pending_changes(entries: list, now: float) -> dict[str, float]:
    """Tasks with a change begun, not done, and younger than PENDING_SECONDS: until when."""
    done = {e[3] for e in entries if len(e) >= 4 and e[2] == "done"}
    pending: dict[str, float] = {}
    for e in entries:
        if len(e) >= 5 and e[2] == "begin" and e[3] not in done:
            until = float(e[4]) + PENDING_SECONDS
            if until > now:
                pending[e[1]] = max(until, pending.get(e[1], 0.0))
    return pending


def log_changes(log: dict, since: int | None, token: object, now: float | None = None) -> Changes:
    """What changed after generation `since` according to `log`, and what is still pending."""
    generation = int(log.get("generation", 0))
    changes = log.get("changes", [])
    pending = pending_changes(changes, time.time() if now is None else now)
    if since is None or (changes and changes[0][0] > since + 1) or since > generation:
        return Changes(generation, None, token, pending)
    tasks = {e[1] for e in changes if e[0] > since} | set(pending)
    return Changes(generation, tasks, token, pending)


def snapshot_name(generation: int, tag: str) -> str:
    """The file or object name of the snapshot taken at `generation` for backbone `tag`."""
    return f"g{generation:012d}-{tag}.json.gz"


def parse_snapshot_names(names) -> list[tuple[int, str, str]]:
    """(generation, tag, name) of every snapshot name among `names`, oldest first."""
    found = [(int(m.group(1)), m.group(2), n) for n in names if (m := SNAPSHOT_NAME.fullmatch(n))]
    return sorted(found)


def outdated_snapshots(names, tag: str) -> list[str]:
    """The snapshots of backbone `tag` beyond the SNAPSHOTS_KEPT newest ones."""
    same = [name for _, t, name in parse_snapshot_names(names) if t == tag]
    return same[:-SNAPSHOTS_KEPT]


class PatchStore(ABC):
    """Where versions live. Calls block (disk or network): never call them on the event loop.
    A store that cannot be reached raises `StoreUnavailable`."""

    url: str  # where the store is, for /info and logs (never with credentials)

    @contextlib.contextmanager
    def _change(self, task: str):
        """One change of `task`: logged as begun before its first write and done after its
        last, so a writer killed in between still leaves the task to be re-read."""
        change = uuid.uuid4().hex[:12]
        self._log(task, "begin", change)
        self._step("begun")
        yield
        self._log(task, "done", change)

    def _step(self, name: str) -> None:
        """A point between two writes of a change (a fault hook: tests end a writer here)."""
        return None

    @abstractmethod
    def _log(self, task: str, phase: str, change: str) -> None:
        """Append one entry to the change log (see `log_append`)."""

    @abstractmethod
    def tasks(self) -> list[str]:
        """Names of the tasks present."""

    @abstractmethod
    def record(self, task: str) -> TaskRecord | None:
        """The task's versions and active pointer, or None when the task is absent."""

    @abstractmethod
    def read(self, task: str, version: int) -> bytes:
        """Bytes of one version; `UnknownVersion` when it is gone."""

    @abstractmethod
    def add_version(
        self, task: str, data: bytes, sha256: str = "", activate: bool = False
    ) -> tuple[int, bool]:
        """Store `data` as a new immutable version: (its number, True); or, if a version of the
        task already holds these bytes, (that number, False). `sha256`: the bytes' hex digest
        where the caller has it (else it is computed); `activate`: the task points at the new
        version in the same pointer write (one write and one change-log entry, not two), and
        any rollout of the task ends."""

    @abstractmethod
    def set_active(self, task: str, version: int, rollout: dict | None = None) -> None:
        """Point the task at a stored version; the rollout is replaced in the same write
        (None: the task has none)."""

    @abstractmethod
    def set_rollout(self, task: str, rollout: dict | None) -> None:
        """Replace the task's rollout (None: remove it); the active version is kept."""

    @abstractmethod
    def delete_version(self, task: str, version: int) -> None:
        """Remove one version."""

    @abstractmethod
    def delete_task(self, task: str) -> None:
        """Remove a task and every version."""

    @abstractmethod
    def snapshot_names(self) -> list[str]:
        """Names of the stored registry snapshots (see server/core/snapshot.py)."""

    @abstractmethod
    def read_snapshot(self, name: str) -> bytes | None:
        """One snapshot's bytes, or None when it is gone."""

    @abstractmethod
    def write_snapshot(self, name: str, data: bytes, tag: str) -> None:
        """Store a snapshot whole (never half-written), then delete the outdated ones of `tag`."""

    @abstractmethod
    def changes(self, since: Changes | None) -> Changes:
        """Tasks changed by any process after `since` (None: from the start); one cheap read
        when nothing changed, whatever the number of tasks."""
