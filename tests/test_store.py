"""The folder store: layout, exclusive version numbers, atomic pointer, stale temporaries."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from bitpatch.server.errors import InvalidTaskName, UnknownVersion
from bitpatch.server.store import open_store, valid_task_name
from bitpatch.server.store_folder import FolderStore


def test_layout_and_pointer(tmp_path):
    store = open_store(tmp_path)
    assert store.add_version("t", b"one") == 1 and store.add_version("t", b"two") == 2
    store.set_active("t", 1)
    assert (tmp_path / "t" / "v2.safetensors").read_bytes() == b"two"
    pointer = json.loads((tmp_path / "t" / "task.json").read_text())
    assert pointer == {"active": 1, "next_version": 3}
    record = store.record("t")
    assert record.versions == [1, 2] and record.active == 1
    assert store.tasks() == ["t"] and store.record("absent") is None


def test_numbers_are_never_reused(tmp_path):
    store = FolderStore(tmp_path)
    for data in (b"a", b"b"):
        store.add_version("t", data)
    store.set_active("t", 1)
    store.delete_version("t", 2)
    assert store.add_version("t", b"c") == 3


def test_concurrent_writers_get_distinct_numbers(tmp_path):
    stores = [FolderStore(tmp_path) for _ in range(4)]  # as separate processes would
    got: list[int] = []

    def write(i):
        for j in range(5):
            got.append(stores[i].add_version("t", f"{i}-{j}".encode()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 21))
    contents = {stores[0].read("t", v) for v in got}
    assert len(contents) == 20


def test_read_of_a_deleted_version(tmp_path):
    store = FolderStore(tmp_path)
    store.add_version("t", b"x")
    store.delete_version("t", 1)
    with pytest.raises(UnknownVersion, match="no version 1"):
        store.read("t", 1)


def test_task_names_cannot_become_paths(tmp_path):
    for name in ("..", "a/b", "nl\n", "UPPER", "", "-x", "a" * 65):
        assert not valid_task_name(name), repr(name)
    with pytest.raises(InvalidTaskName):
        FolderStore(tmp_path).add_version("../escape", b"x")


def test_only_stale_leftovers_are_swept(tmp_path):
    (tmp_path / "t").mkdir()
    old, young = tmp_path / "t" / ".a.tmp", tmp_path / "t" / ".b.tmp"
    for path in (old, young):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 3600,) * 2)
    FolderStore(tmp_path)
    assert not old.exists() and young.exists()


def test_corrupt_pointer_is_ignored(tmp_path):
    store = FolderStore(tmp_path)
    store.add_version("t", b"x")
    (tmp_path / "t" / "task.json").write_text("{broken")
    assert store.record("t").active is None and store.record("t").versions == [1]
