"""The folder backend of the patch store, crash-safe and shared by any number of processes.

Layout: `<root>/<task>/v<N>.safetensors` (immutable), `<root>/<task>/task.json`
(`{"active": N, "next_version": M}`), `<root>/<task>/.sha256-<hex>` (which version holds those
bytes) and `<root>/.changes.json` (the change log). Every file is written to a temporary name,
fsynced and then linked or renamed into place, so a kill -9 at any moment leaves the old or the
new state. A version number is claimed by `link()`, which fails if the file exists; pointer,
markers and log change under an exclusive `flock` on `<root>/.lock`, so writers in different
processes never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from ...patches.patch_file import sha256_bytes as digest_of
from ..errors import InvalidTaskName, UnknownVersion
from .base import (
    Changes,
    PatchStore,
    TaskRecord,
    log_append,
    log_changes,
    new_log,
    outdated_snapshots,
    pointer_rollout,
    valid_task_name,
    with_active,
    with_rollout,
)

log = logging.getLogger(__name__)
VERSION_FILE = re.compile(r"v([0-9]+)\.safetensors")
STALE_SECONDS = 600  # temporaries older than this were left by a killed writer


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temporary(folder: Path, name: str, data: bytes) -> Path:
    """A fully written, fsynced temporary file in `folder`."""
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def atomic_write(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename, fsync the folder."""
    tmp = _write_temporary(path.parent, path.name, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def version_file(folder: Path, version: int) -> Path:
    """The file of one version in a task's folder."""
    return folder / f"v{version}.safetensors"


def read_pointer(folder: Path) -> dict:
    """A task folder's pointer (active version, next number); {} when absent or unreadable."""
    path = folder / "task.json"
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.error("event=store_pointer_unreadable path=%s error=%s", path, err)
        return {}
    return value if isinstance(value, dict) else {}


def write_pointer(folder: Path, pointer: dict) -> None:
    """Replace a task folder's pointer atomically."""
    atomic_write(folder / "task.json", json.dumps(pointer).encode())


def next_number(pointer: dict) -> int:
    """The pointer's next version number (1 when it has none)."""
    value = pointer.get("next_version", 1)
    return value if isinstance(value, int) and value >= 1 else 1


def first_free_number(folder: Path, pointer: dict) -> int:
    """A number past every version ever used: the pointer's next and every file present."""
    present = (int(m.group(1)) for n in os.listdir(folder) if (m := VERSION_FILE.fullmatch(n)))
    return max([next_number(pointer), *(v + 1 for v in present)])


def marked_version(folder: Path, marker: Path) -> int | None:
    """The stored version a bytes marker names, if it is still there."""
    try:
        version = int(marker.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return version if version_file(folder, version).exists() else None


def link_new_version(folder: Path, written: Path, version: int) -> int:
    """Link the durably written temporary `written` as the first free version from `version`
    on (hard links never replace a file, so two writers never share a number); the number."""
    while True:
        try:
            os.link(written, version_file(folder, version))
            break
        except FileExistsError:
            version += 1
    _fsync_dir(folder)
    return version


class FolderStore(PatchStore):
    """Patch files under one root folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root.resolve())
        self.root.mkdir(parents=True, exist_ok=True)
        self._log_cache: tuple[tuple, dict] | None = None  # (file stamp, log) written last
        self._sweep_stale()

    def _sweep_stale(self) -> None:
        """Remove what killed writers left (never a live writer's temporary: those are young)."""
        cutoff = time.time() - STALE_SECONDS
        leftovers = [
            *self.root.glob("*/.*.tmp"),
            *self.root.glob(".snapshots/.*.tmp"),
            *self.root.glob(".incoming/.*.tmp"),
            *self.root.glob(".trash-*"),
        ]
        for leftover in leftovers:
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            except OSError:
                pass  # another process removed it first

    @property
    def _incoming(self) -> Path:
        """Where uploads are written before they are linked into their task's folder."""
        return self.root / ".incoming"

    def _dir(self, task: str) -> Path:
        if not valid_task_name(task):
            raise InvalidTaskName(f"invalid task name {task!r}")
        return self.root / task

    def path(self, task: str, version: int) -> Path:
        """File of one version."""
        return version_file(self._dir(task), version)

    def tasks(self) -> list[str]:
        """Task folders present (names that are valid task names)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_task_name(p.name))

    def record(self, task: str) -> TaskRecord | None:
        """The task's versions and pointer, or None when the task has no folder."""
        folder = self._dir(task)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return None
        versions = sorted(int(m.group(1)) for n in names if (m := VERSION_FILE.fullmatch(n)))
        pointer = read_pointer(folder)
        active = pointer.get("active")
        active = active if active in versions else None
        return TaskRecord(task, versions, active, pointer_rollout(pointer))

    def read(self, task: str, version: int) -> bytes:
        """Bytes of one version."""
        try:
            return self.path(task, version).read_bytes()
        except FileNotFoundError:
            raise UnknownVersion(
                f"task {task!r} has no version {version} (it was deleted)"
            ) from None

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive across processes and threads (each call opens its own descriptor)."""
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def add_version(
        self, task: str, data: bytes, sha256: str = "", activate: bool = False
    ) -> tuple[int, bool]:
        """Write a new immutable version under the first free number past every one used."""
        folder = self._dir(task)
        marker = folder / f".sha256-{sha256 or digest_of(data)}"
        if (same := marked_version(folder, marker)) is not None:
            return same, False
        # the bytes are written and fsynced before the lock, beside the tasks, so concurrent
        # uploads overlap their largest write; under the lock the file is only linked
        self._incoming.mkdir(exist_ok=True)
        written = _write_temporary(self._incoming, task, data)
        try:
            return self._add_written(task, folder, marker, written, activate)
        finally:
            written.unlink(missing_ok=True)

    def _add_written(
        self, task: str, folder: Path, marker: Path, written: Path, activate: bool
    ) -> tuple[int, bool]:
        """add_version under the lock, the bytes already durable in `written`."""
        with self._locked():
            if (same := marked_version(folder, marker)) is not None:
                return same, False
            with self._change(task):
                folder.mkdir(exist_ok=True)
                pointer = read_pointer(folder)
                version = link_new_version(folder, written, first_free_number(folder, pointer))
                self._step("version")
                atomic_write(marker, str(version).encode())
                self._step("marker")
                if activate:
                    pointer = with_active(pointer, version, None)
                write_pointer(folder, {**pointer, "next_version": version + 1})
                self._step("pointer")
        return version, True

    def set_active(self, task: str, version: int, rollout: dict | None = None) -> None:
        """Point the task at `version` (the next number is kept), its rollout replaced."""
        folder = self._dir(task)
        with self._locked(), self._change(task):
            write_pointer(folder, with_active(read_pointer(folder), version, rollout))
            self._step("pointer")

    def set_rollout(self, task: str, rollout: dict | None) -> None:
        """Replace the task's rollout in its pointer."""
        folder = self._dir(task)
        with self._locked(), self._change(task):
            write_pointer(folder, with_rollout(read_pointer(folder), rollout))
            self._step("pointer")

    def delete_version(self, task: str, version: int) -> None:
        """Remove one (non-active) version's file and its bytes marker."""
        folder = self._dir(task)
        with self._locked(), self._change(task):
            path = version_file(folder, version)
            if path.exists():
                (folder / f".sha256-{digest_of(path.read_bytes())}").unlink(missing_ok=True)
                self._step("marker")
            path.unlink(missing_ok=True)
            _fsync_dir(folder)
            self._step("version")

    def delete_task(self, task: str) -> None:
        """Remove a task and all its versions (renamed away first, then deleted)."""
        folder = self._dir(task)
        trash = self.root / f".trash-{task}-{uuid.uuid4().hex}"
        with self._locked(), self._change(task):
            os.replace(folder, trash)
            _fsync_dir(self.root)
            self._step("moved")
        shutil.rmtree(trash, ignore_errors=True)

    # ---- registry snapshots ---------------------------------------------------------------
    @property
    def _snapshots(self) -> Path:
        return self.root / ".snapshots"

    def snapshot_names(self) -> list[str]:
        """Files in `<root>/.snapshots/`."""
        try:
            return os.listdir(self._snapshots)
        except FileNotFoundError:
            return []

    def read_snapshot(self, name: str) -> bytes | None:
        """One snapshot file's bytes."""
        try:
            return (self._snapshots / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_snapshot(self, name: str, data: bytes, tag: str) -> None:
        """Written to a temporary, renamed into place; older ones of `tag` removed."""
        self._snapshots.mkdir(exist_ok=True)
        atomic_write(self._snapshots / name, data)
        for old in outdated_snapshots(self.snapshot_names(), tag):
            (self._snapshots / old).unlink(missing_ok=True)

    # ---- the change log -------------------------------------------------------------------
    @property
    def _log_path(self) -> Path:
        return self.root / ".changes.json"

    def _read_log(self) -> dict:
        """The log: the copy this process wrote last while the file is still that one (one
        stat, no parse), else read."""
        stamp = self._stamp()
        if self._log_cache is not None and stamp is not None and self._log_cache[0] == stamp:
            return self._log_cache[1]
        try:
            value = json.loads(self._log_path.read_text())
        except FileNotFoundError:
            return new_log()
        except (OSError, ValueError) as err:
            log.error("event=store_log_unreadable path=%s error=%s", self._log_path, err)
            return new_log()
        return value if isinstance(value, dict) else new_log()

    def _log(self, task: str, phase: str, change: str) -> None:
        """Append an entry to the log (caller holds the lock)."""
        entry = log_append(self._read_log(), task, phase, change)
        atomic_write(self._log_path, json.dumps(entry).encode())
        self._log_cache = (self._stamp(), entry)

    def _stamp(self) -> tuple | None:
        try:
            st = self._log_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changes(self, since: Changes | None) -> Changes:
        """One stat() when nothing changed; the log's tasks since `since` otherwise."""
        stamp = self._stamp()
        if since is not None and since.token == stamp:
            return since.unchanged()
        return log_changes(self._read_log(), None if since is None else since.generation, stamp)
