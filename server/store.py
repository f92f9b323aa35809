"""The patch store interface: immutable version files and a per-task active pointer.

The registry talks only to `PatchStore`; `FolderStore` (server/store_folder.py) is the backend.
Version numbers are allocated by the store with an exclusive create, never read-then-write.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

TASK_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def valid_task_name(task: str) -> bool:
    """Task names: lower-case letters, digits, '_', '.', '-'; 1-64 chars; no path tricks."""
    return TASK_NAME.fullmatch(task) is not None and task not in (".", "..")


@dataclass(frozen=True)
class TaskRecord:
    """What the store knows of a task: its stored versions and the active one."""

    task: str
    versions: list[int]
    active: int | None


class PatchStore(ABC):
    """Where versions live. Calls block (disk or network): never call them on the event loop."""

    url: str  # where the store is, for /info and logs (never with credentials)

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
    def add_version(self, task: str, data: bytes) -> int:
        """Store a new immutable version (not yet active) under a fresh number; return it."""

    @abstractmethod
    def set_active(self, task: str, version: int) -> None:
        """Point the task at a stored version."""

    @abstractmethod
    def delete_version(self, task: str, version: int) -> None:
        """Remove one version."""

    @abstractmethod
    def delete_task(self, task: str) -> None:
        """Remove a task and every version."""


def open_store(location: str | Path) -> PatchStore:
    """The store a `--store` value names: a folder path."""
    from .store_folder import FolderStore

    return FolderStore(Path(location))
