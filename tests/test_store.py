"""The store backends, folder and S3 (a real moto server): exclusive version numbers, identical
bytes, pointer, change log, concurrent writers, and the folder's crash-safety details."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from bitpatch.server.errors import InvalidTaskName, StoreUnavailable, UnknownVersion
from bitpatch.server.store import open_store
from bitpatch.server.store.base import (
    PENDING_SECONDS,
    Changes,
    log_append,
    log_changes,
    valid_task_name,
)
from bitpatch.server.store.folder import FolderStore


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url")


def test_versions_pointer_and_record(location):
    store = open_store(location)
    assert store.add_version("t", b"one") == (1, True)
    assert store.add_version("t", b"two") == (2, True)
    store.set_active("t", 1)
    record = store.record("t")
    assert record.versions == [1, 2] and record.active == 1
    assert store.read("t", 2) == b"two"
    assert store.tasks() == ["t"] and store.record("absent") is None


def test_a_version_stored_active_moves_the_pointer_in_the_same_write(location):
    store = open_store(location)
    store.add_version("t", b"one", activate=True)
    first = store.changes(None)
    assert store.add_version("t", b"two", sha256="", activate=True) == (2, True)
    assert store.record("t").active == 2
    later = store.changes(first)
    assert later.tasks == {"t"} and later.generation == first.generation + 2  # begun, done
    assert store.add_version("t", b"three") == (3, True) and store.record("t").active == 2


def test_identical_bytes_are_one_version(location):
    store = open_store(location)
    assert store.add_version("t", b"same") == (1, True)
    assert store.add_version("t", b"same") == (1, False)
    assert open_store(location).add_version("t", b"same") == (1, False)  # another process
    store.delete_version("t", 1)
    assert store.add_version("t", b"same") == (2, True)  # deleted bytes are new again


def test_numbers_are_never_reused(location):
    store = open_store(location)
    for data in (b"a", b"b"):
        store.add_version("t", data)
    store.set_active("t", 1)
    store.delete_version("t", 2)
    assert store.add_version("t", b"c") == (3, True)


def test_read_of_a_deleted_version(location):
    store = open_store(location)
    store.add_version("t", b"x")
    store.add_version("t", b"y")
    store.delete_version("t", 1)
    with pytest.raises(UnknownVersion, match="no version 1"):
        store.read("t", 1)
    store.delete_task("t")
    assert store.record("t") is None and store.tasks() == []


def test_concurrent_writers_get_distinct_numbers(location):
    stores = [open_store(location) for _ in range(4)]  # as separate processes would
    got: list[int] = []

    def write(i):
        for j in range(5):
            got.append(stores[i].add_version("t", f"{i}-{j}".encode())[0])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 21))
    assert len({stores[0].read("t", v) for v in got}) == 20


def test_change_log_names_what_changed(location):
    writer, reader = open_store(location), open_store(location)
    start = reader.changes(None)
    assert start.tasks is None  # first look: everything
    idle = reader.changes(start)
    assert idle.tasks == set() and idle.generation == start.generation
    writer.add_version("a", b"1")
    writer.set_active("a", 1)
    writer.add_version("b", b"2")
    seen = reader.changes(idle)
    assert seen.tasks == {"a", "b"} and seen.generation == start.generation + 6  # 3 changes
    assert reader.changes(seen).tasks == set()
    writer.delete_task("b")
    assert reader.changes(seen).tasks == {"b"}


def test_task_names_cannot_become_paths(tmp_path):
    for name in ("..", "a/b", "nl\n", "UPPER", "", "-x", "a" * 65):
        assert not valid_task_name(name), repr(name)
    with pytest.raises(InvalidTaskName):
        FolderStore(tmp_path).add_version("../escape", b"x")


def test_folder_layout_is_the_documented_one(tmp_path):
    store = FolderStore(tmp_path)
    store.add_version("t", b"one")
    store.set_active("t", 1)
    assert (tmp_path / "t" / "v1.safetensors").read_bytes() == b"one"
    assert json.loads((tmp_path / "t" / "task.json").read_text()) == {
        "active": 1,
        "next_version": 2,
    }


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


def test_s3_missing_bucket_fails_at_start(s3_server):
    with pytest.raises(ValueError, match="does not exist"):
        open_store("s3://no-such-bucket-here/patches")


def test_s3_unreachable_is_store_unavailable(s3_url, s3_server):
    store = open_store(s3_url)
    s3_server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.add_version("t", b"x")
        assert time.monotonic() - started < 15  # bounded timeouts, no hang
    finally:
        s3_server.thaw()
    assert store.add_version("t", b"x") == (1, True)


class Crash(Exception):
    """A writer ended between two writes (the store's fault hook)."""


def crash_at(store, step: str):
    def step_hook(name: str) -> None:
        if name == step:
            raise Crash(name)

    store._step = step_hook
    return store


def test_a_change_cut_off_after_its_pointer_write_is_still_read(location):
    writer, reader = open_store(location), open_store(location)
    writer.add_version("t", b"one", activate=True)
    writer.add_version("t", b"two")
    seen = reader.changes(reader.changes(None))
    with pytest.raises(Crash):
        crash_at(writer, "pointer").set_active("t", 2)  # the pointer moved, no "done" entry
    first = reader.changes(seen)
    assert first.tasks == {"t"} and reader.record("t").active == 2
    again = reader.changes(first)  # the log did not change: the begun change is re-read
    assert again.tasks == {"t"} and again.generation == first.generation
    assert again.unchanged(now=time.time() + PENDING_SECONDS + 1).tasks == set()  # not forever


def test_a_done_change_is_not_pending(location):
    writer, reader = open_store(location), open_store(location)
    writer.add_version("t", b"one", activate=True)
    seen = reader.changes(reader.changes(None))
    writer.set_rollout("t", {"canary": {"version": 1, "percent": 5}})
    changed = reader.changes(seen)
    assert changed.tasks == {"t"} and changed.pending == {}
    assert reader.changes(changed).tasks == set()


def test_logs_without_phases_still_read():
    old = {"generation": 3, "changes": [[1, "a"], [2, "b"], [3, "a"]]}
    assert log_changes(old, 1, None).tasks == {"a", "b"}
    begun = log_append(old, "c", "begin", "x1", now=1000.0)
    assert log_changes(begun, 3, None, now=1001.0).tasks == {"c"}
    assert log_changes(begun, 4, None, now=1001.0).pending == {"c": 1000.0 + PENDING_SECONDS}
    done = log_append(begun, "c", "done", "x1")
    assert log_changes(done, 5, None, now=1001.0) == Changes(5, set(), None, {})
