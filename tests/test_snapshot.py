"""Registry snapshots: a start from the newest snapshot plus the changes since equals a start
that reads every task; damaged, foreign or outdated snapshots are passed over."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from bitpatch.patches.backbone import backbone_from_model
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.core.registry import Registry
from bitpatch.server.core.rollouts import parse_rollout
from bitpatch.server.core.snapshot import (
    HURRY_GENERATIONS,
    HURRY_SECONDS,
    SNAPSHOT_SECONDS,
    SnapshotWriter,
    decode_snapshot,
    encode_snapshot,
)
from bitpatch.server.store import open_store
from bitpatch.server.store.base import LOG_LENGTH, SNAPSHOTS_KEPT, parse_snapshot_names

from tiny import make_model, random_patch


@pytest.fixture(scope="module")
def backbone():
    model, tokenizer = make_model("bert")
    return backbone_from_model(model, tokenizer, "tiny")


@pytest.fixture(params=["folder", "s3"])
def store_url(request, tmp_path):
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_server").bucket_url(f"snap-{tmp_path.name[-12:]}")


def started(backbone, url: str) -> Registry:
    registry = Registry(open_store(url), MultiTaskEngine(backbone))
    registry.load()
    return registry


def patch(backbone, task: str, seed: int) -> bytes:
    return random_patch(backbone.model, task, 2, "cls", seed=seed).to_bytes()


def view(registry: Registry) -> dict:
    """Everything a start indexes: per task its versions' hashes, the active one, the rollout."""
    out = {}
    for task in registry.tasks():
        rollout = registry.rollout(task)
        out[task] = (
            {v: info.sha256 for v, info in registry.versions(task).items()},
            registry.active_version(task),
            None if rollout is None else rollout.to_json(),
        )
    return out


def test_a_start_from_a_snapshot_equals_a_full_read_and_follows_later_changes(backbone, store_url):
    writer = started(backbone, store_url)
    for i in range(6):
        writer.upload(f"t{i}", patch(backbone, f"t{i}", i))
    writer.upload("t0", patch(backbone, "t0", 100), activate=False)
    writer.set_rollout("t0", parse_rollout({"canary": {"version": 2, "percent": 10}}))
    writer.sync()
    assert writer.save_snapshot()
    # changes after the snapshot: a new version, a new task, a deleted task, an activation
    writer.upload("t1", patch(backbone, "t1", 101))
    writer.upload("new", patch(backbone, "new", 102))
    writer.delete_task("t2")
    writer.activate("t3", 1)
    fast = started(backbone, store_url)
    assert fast.loaded_from == "snapshot"
    assert view(fast) == view(writer)
    open_store(store_url).write_snapshot("g999999999999-0000000000000000.json.gz", b"x", "0" * 16)
    for name in parse_snapshot_names(open_store(store_url).snapshot_names()):
        if name[1] != "0" * 16:
            open_store(store_url).write_snapshot(name[2], b"not gzip", name[1])
    full = started(backbone, store_url)
    assert full.loaded_from == "store" and view(full) == view(writer)
    assert fast.engine.registered_keys() == []  # nothing decoded before its first use


def test_a_damaged_snapshot_is_passed_over_for_an_older_one(backbone, tmp_path, caplog):
    url = str(tmp_path / "store")
    writer = started(backbone, url)
    writer.upload("a", patch(backbone, "a", 1))
    writer.sync()
    assert writer.save_snapshot(force=True)
    writer.upload("b", patch(backbone, "b", 2))
    writer.sync()
    assert writer.save_snapshot(force=True)
    names = sorted((tmp_path / "store" / ".snapshots").iterdir())
    assert len(names) == 2
    names[-1].write_bytes(gzip.compress(b'{"format": 1, "tasks": '))  # cut short
    with caplog.at_level(logging.ERROR):
        again = started(backbone, url)
    assert "snapshot_unreadable" in caplog.text
    assert again.loaded_from == "snapshot" and again.tasks() == ["a", "b"]  # b: changed since


def test_only_the_newest_snapshots_are_kept_and_none_while_a_change_is_pending(backbone, tmp_path):
    url = str(tmp_path / "store")
    writer = started(backbone, url)
    for i in range(SNAPSHOTS_KEPT + 2):
        writer.upload(f"t{i}", patch(backbone, f"t{i}", i))
        writer.sync()
        assert writer.save_snapshot(force=True)
    assert len(list((tmp_path / "store" / ".snapshots").iterdir())) == SNAPSHOTS_KEPT
    assert not writer.save_snapshot(force=True)  # nothing changed since the newest
    with writer.store._locked():
        writer.store._log("t0", "begin", "unfinished")  # a writer that died mid-change
    writer.upload("t0", patch(backbone, "t0", 50))
    writer.sync()
    assert writer.changes.pending and not writer.save_snapshot(force=True)


def test_a_snapshot_older_than_the_change_log_is_not_used(backbone, tmp_path):
    url = str(tmp_path / "store")
    writer = started(backbone, url)
    writer.upload("t", patch(backbone, "t", 1))
    writer.sync()
    assert writer.save_snapshot(force=True)
    for _ in range(LOG_LENGTH // 2 + 1):  # two log entries per change
        writer.store.set_rollout("t", None)
    assert started(backbone, url).loaded_from == "store"


def test_snapshots_of_another_backbone_or_format_are_refused(backbone, tmp_path):
    writer = started(backbone, str(tmp_path / "store"))
    writer.upload("t", patch(backbone, "t", 1))
    sha = backbone.spec.sha256
    entry = writer._versions["t"]
    from bitpatch.server.core.snapshot import IndexedTask

    data = encode_snapshot(7, sha, {"t": IndexedTask(entry, 1, None)})
    generation, tasks = decode_snapshot(data, sha)
    assert generation == 7 and tasks["t"].versions == entry and tasks["t"].active == 1
    with pytest.raises(ValueError, match="another format or backbone"):
        decode_snapshot(data, "f" * 64)
    body = json.loads(gzip.decompress(data))
    body["tasks"]["t"]["active"] = 9
    with pytest.raises(ValueError, match="active version 9"):
        decode_snapshot(gzip.compress(json.dumps(body).encode()), sha)


def test_the_writer_waits_between_snapshots_and_skips_a_newer_stored_one(tmp_path):
    store = open_store(str(tmp_path / "store"))
    writer = SnapshotWriter(store, "a" * 64, written=1)
    assert writer.due(2, now=SNAPSHOT_SECONDS) and not writer.due(1, now=SNAPSHOT_SECONDS)
    other = SnapshotWriter(store, "a" * 64)
    assert other.write(5, {})
    assert not writer.write(3, {}) and writer.written == 5  # another process is ahead
    assert not writer.due(6, now=writer.last_try + 1)  # written (tried) a second ago
    far = writer.written + HURRY_GENERATIONS
    assert writer.due(far, now=writer.last_try + HURRY_SECONDS)  # the log runs away: sooner
