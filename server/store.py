"""The patch store on disk: every version's file and each task's active pointer, crash-safe.

Layout: `<root>/<task>/v<N>.safetensors` (immutable) and `<root>/<task>/task.json`
(`{"active": N, "next_version": M}`). Every write goes to a temporary file, is fsynced and
renamed, so a kill -9 at any moment leaves the old or the new state, never a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
VERSION_FILE = re.compile(r"^v(\d+)\.safetensors$")


@dataclass
class TaskRecord:
    """What the store knows of a task: its versions on disk, the active one, the next number."""

    task: str
    versions: list[int]
    active: int | None
    next_version: int


def valid_task_name(task: str) -> bool:
    """Task names: lower-case letters, digits, '_', '.', '-'; 1-64 chars; no path tricks."""
    return bool(TASK_NAME.match(task)) and task not in (".", "..")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class PatchStore:
    """Reads and writes patch files under one root folder (callers serialise writes)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_temporaries()

    def _sweep_temporaries(self) -> None:
        for tmp in self.root.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)

    def _dir(self, task: str) -> Path:
        if not valid_task_name(task):
            raise ValueError(f"invalid task name {task!r}")
        return self.root / task

    def path(self, task: str, version: int) -> Path:
        """File of one version."""
        return self._dir(task) / f"v{version}.safetensors"

    def tasks(self) -> list[str]:
        """Task folders present (names that are valid task names)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and valid_task_name(p.name))

    def record(self, task: str) -> TaskRecord | None:
        """The task's versions and pointer, or None when the task has no folder."""
        folder = self._dir(task)
        if not folder.is_dir():
            return None
        versions = sorted(
            int(m.group(1)) for p in folder.iterdir() if (m := VERSION_FILE.match(p.name))
        )
        pointer = self._read_pointer(folder / "task.json")
        next_version = max([pointer.get("next_version", 1), *[v + 1 for v in versions]])
        active = pointer.get("active")
        return TaskRecord(task, versions, active if active in versions else None, next_version)

    @staticmethod
    def _read_pointer(path: Path) -> dict:
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
        return self.path(task, version).read_bytes()

    def add_version(self, task: str, data: bytes) -> int:
        """Write a new immutable version (not yet active); return its number."""
        folder = self._dir(task)
        folder.mkdir(exist_ok=True)
        record = self.record(task)
        version = record.next_version
        atomic_write(self.path(task, version), data)
        self.write_pointer(task, record.active, version + 1)
        return version

    def write_pointer(self, task: str, active: int | None, next_version: int) -> None:
        """Set the active version (and the next number) atomically."""
        body = json.dumps({"active": active, "next_version": next_version}).encode()
        atomic_write(self._dir(task) / "task.json", body)

    def set_active(self, task: str, version: int) -> None:
        """Point the task at `version`."""
        self.write_pointer(task, version, self.record(task).next_version)

    def delete_version(self, task: str, version: int) -> None:
        """Remove one (non-active) version's file."""
        self.path(task, version).unlink(missing_ok=True)
        _fsync_dir(self._dir(task))

    def delete_task(self, task: str) -> None:
        """Remove a task and all its versions (rename away first, then delete)."""
        folder = self._dir(task)
        trash = self.root / f".trash-{task}-{uuid.uuid4().hex}"
        os.replace(folder, trash)
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
