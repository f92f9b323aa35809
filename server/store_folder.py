"""The folder backend of the patch store, crash-safe.

Layout: `<root>/<task>/v<N>.safetensors` (immutable) and `<root>/<task>/task.json`
(`{"active": N, "next_version": M}`). Every file is written to a temporary name, fsynced and
then linked or renamed into place, so a kill -9 at any moment leaves the old or the new state.
A version number is claimed by `link()`, which fails if the file exists: two writers never get
the same number.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from .errors import InvalidTaskName, UnknownVersion
from .store import PatchStore, TaskRecord, valid_task_name

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


class FolderStore(PatchStore):
    """Patch files under one root folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root.resolve())
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale()

    def _sweep_stale(self) -> None:
        """Remove what killed writers left (never a live writer's temporary: those are young)."""
        cutoff = time.time() - STALE_SECONDS
        for leftover in [*self.root.glob("*/.*.tmp"), *self.root.glob(".trash-*")]:
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            except OSError:
                pass  # another process removed it first

    def _dir(self, task: str) -> Path:
        if not valid_task_name(task):
            raise InvalidTaskName(f"invalid task name {task!r}")
        return self.root / task

    def path(self, task: str, version: int) -> Path:
        """File of one version."""
        return self._dir(task) / f"v{version}.safetensors"

    def tasks(self) -> list[str]:
        """Task folders present (names that are valid task names)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_task_name(p.name))

    def record(self, task: str) -> TaskRecord | None:
        """The task's versions and pointer, or None when the task has no folder."""
        try:
            names = os.listdir(self._dir(task))
        except FileNotFoundError:
            return None
        versions = sorted(int(m.group(1)) for n in names if (m := VERSION_FILE.fullmatch(n)))
        active = self._pointer(task).get("active")
        return TaskRecord(task, versions, active if active in versions else None)

    def _pointer(self, task: str) -> dict:
        path = self._dir(task) / "task.json"
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.error("event=store_pointer_unreadable path=%s error=%s", path, err)
            return {}
        return value if isinstance(value, dict) else {}

    def read(self, task: str, version: int) -> bytes:
        """Bytes of one version."""
        try:
            return self.path(task, version).read_bytes()
        except FileNotFoundError:
            raise UnknownVersion(
                f"task {task!r} has no version {version} (it was deleted)"
            ) from None

    def add_version(self, task: str, data: bytes) -> int:
        """Write a new immutable version under the first free number past every one used."""
        folder = self._dir(task)
        folder.mkdir(exist_ok=True)
        record = self.record(task)
        version = max([self._next_number(task), *(v + 1 for v in record.versions)])
        tmp = _write_temporary(folder, "upload", data)
        try:
            while True:
                try:
                    os.link(tmp, self.path(task, version))  # fails if another writer took it
                    break
                except FileExistsError:
                    version += 1
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        self._write_pointer(task, self._pointer(task).get("active"), version + 1)
        return version

    def _next_number(self, task: str) -> int:
        value = self._pointer(task).get("next_version", 1)
        return value if isinstance(value, int) and value >= 1 else 1

    def _write_pointer(self, task: str, active: int | None, next_version: int) -> None:
        body = json.dumps({"active": active, "next_version": next_version}).encode()
        atomic_write(self._dir(task) / "task.json", body)

    def set_active(self, task: str, version: int) -> None:
        """Point the task at `version` (the next number is kept)."""
        self._write_pointer(task, version, self._next_number(task))

    def delete_version(self, task: str, version: int) -> None:
        """Remove one (non-active) version's file."""
        self.path(task, version).unlink(missing_ok=True)
        _fsync_dir(self._dir(task))

    def delete_task(self, task: str) -> None:
        """Remove a task and all its versions (renamed away first, then deleted)."""
        folder = self._dir(task)
        trash = self.root / f".trash-{task}-{uuid.uuid4().hex}"
        os.replace(folder, trash)
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
