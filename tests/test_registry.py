"""Registry over a real store: restarts, corrupt files, leases pinning versions."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest

from bitpatch.patches.backbone import backbone_from_model
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.core.registry import RECENT_VERSIONS, Registry
from bitpatch.server.errors import VersionActive
from bitpatch.server.store.folder import FolderStore

from tiny import make_model, random_patch


@pytest.fixture(scope="module")
def backbone():
    model, tokenizer = make_model("bert")
    return backbone_from_model(model, tokenizer, "tiny")


def fresh(backbone, root) -> Registry:
    registry = Registry(FolderStore(root), MultiTaskEngine(backbone))
    registry.load()
    return registry


def patch(backbone, task, seed):
    return random_patch(backbone.model, task, 2, "cls", seed=seed).to_bytes()


def test_reload_skips_corrupt_and_foreign_files(backbone, tmp_path, caplog):
    registry = fresh(backbone, tmp_path)
    registry.upload("good", patch(backbone, "good", 1))
    registry.upload("good", patch(backbone, "good", 2))
    registry.upload("broken", patch(backbone, "broken", 3))
    (tmp_path / "broken" / "v1.safetensors").write_bytes(b"corrupt")
    (tmp_path / "good" / "v2.safetensors").write_bytes(b"\x00" * 40)  # active one is bad
    foreign = random_patch(make_model("roberta")[0], "alien", 2, "cls", seed=1)
    (tmp_path / "alien").mkdir()
    (tmp_path / "alien" / "v1.safetensors").write_bytes(foreign.to_bytes())
    (tmp_path / "notes.txt").write_text("not a task")
    stale = tmp_path / "good" / ".v3.safetensors.123.tmp"
    stale.write_bytes(b"half")  # left by a writer killed long ago
    os.utime(stale, (time.time() - 3600,) * 2)
    live = tmp_path / "good" / ".upload.456.tmp"  # another process writing right now
    live.write_bytes(b"half")
    with caplog.at_level(logging.ERROR):
        again = fresh(backbone, tmp_path)
    assert again.tasks() == ["good"]
    assert again.active_version("good") == 1  # falls back to the newest valid version
    assert "patch_skipped" in caplog.text and "alien" in caplog.text
    assert list(tmp_path.glob("good/.*.tmp")) == [live]


def test_lease_pins_version_until_released(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    lease = registry.lease("t")
    registry.upload("t", patch(backbone, "t", 2))
    assert registry.active_version("t") == 2
    assert "t@1" in registry.engine.registered_keys()  # still pinned by the lease
    registry.release(lease)
    assert registry.engine.registered_keys() == ["t@2"]


def test_named_version_loads_on_demand(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    registry.upload("t", patch(backbone, "t", 2))
    assert registry.lease("t", 1) is None  # stored, not resident
    registry.make_resident("t", 1)
    lease = registry.lease("t", 1)
    assert lease.version == 1 and "t@1" in registry.engine.registered_keys()
    registry.release(lease)
    assert sorted(registry.engine.registered_keys()) == ["t@1", "t@2"]  # recently used
    for seed in range(3, 4 + RECENT_VERSIONS):  # more recent ones push it out
        registry.upload("t", patch(backbone, "t", seed))
        registry.make_resident("t", registry.active_version("t") - 1)
    assert "t@1" not in registry.engine.registered_keys()
    assert len(registry.engine.registered_keys()) == RECENT_VERSIONS + 1


def test_start_decodes_no_patch_and_loads_each_on_first_use(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    for seed in range(5):
        registry.upload("a", patch(backbone, "a", seed))
        registry.upload("b", patch(backbone, "b", 10 + seed))
    registry.activate("a", 2)
    again = fresh(backbone, tmp_path)
    assert again.engine.registered_keys() == []
    assert sorted(again.versions("a")) == [1, 2, 3, 4, 5] and again.active_version("a") == 2
    assert again.version("b", 3).sha256 == registry.version("b", 3).sha256
    assert again.lease("a") is None  # stored, not yet decoded
    again.make_resident("a", 2)
    lease = again.lease("a")
    assert lease.version == 2 and again.engine.registered_keys() == ["a@2"]
    again.release(lease)
    assert again.engine.registered_keys() == ["a@2"]  # an active version stays once used


def test_an_active_version_that_no_longer_decodes_gives_way(backbone, tmp_path, caplog):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    bad = random_patch(backbone.model, "t", 2, "cls", seed=2)
    next(iter(bad.biases.values()))[0] = float("nan")  # framing and metadata still fine
    version, _ = registry.store.add_version("t", bad.to_bytes(), activate=True)
    again = fresh(backbone, tmp_path)
    assert again.active_version("t") == version  # found bad only when first used
    with caplog.at_level(logging.ERROR):
        again.make_resident("t", version)
    assert again.active_version("t") == 1 and again.lease("t").version == 1
    assert "active_version_unusable" in caplog.text and again.skipped == 1
    assert again.store.record("t").active == version  # the store is left as it is


def test_max_resident_keeps_the_most_recently_used_active_versions(backbone, tmp_path):
    writer = fresh(backbone, tmp_path)
    for i in range(4):
        writer.upload(f"t{i}", patch(backbone, f"t{i}", i))
    registry = Registry(FolderStore(tmp_path), MultiTaskEngine(backbone), max_resident=2)
    registry.load()

    def use(task: str):
        registry.make_resident(task, registry.active_version(task))
        return registry.lease(task)

    held = use("t0")  # held by a request while others push it out
    for task in ("t1", "t2"):
        registry.release(use(task))
    assert sorted(registry.engine.registered_keys()) == ["t0@1", "t1@1", "t2@1"]
    registry.release(held)
    assert sorted(registry.engine.registered_keys()) == ["t1@1", "t2@1"]
    registry.release(use("t1"))  # t1 is now the most recent: t2 goes next
    registry.release(use("t3"))
    assert sorted(registry.engine.registered_keys()) == ["t1@1", "t3@1"]
    assert registry.resident_count() == 2


def test_concurrent_first_use_loads_a_task_once_and_serves_every_caller(backbone, tmp_path):
    fresh(backbone, tmp_path).upload("t", patch(backbone, "t", 1))
    registry = fresh(backbone, tmp_path)
    leases, start = [], threading.Barrier(16)

    def first_use():
        start.wait()
        while (lease := registry.lease("t")) is None:
            registry.make_resident("t", 1)
        leases.append(lease)

    threads = [threading.Thread(target=first_use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(leases) == 16 and {lease.key for lease in leases} == {"t@1"}
    assert registry.engine.registered_keys() == ["t@1"]
    for lease in leases:
        registry.release(lease)
    assert registry.engine.registered_keys() == ["t@1"]


def test_keep_versions_prunes_the_oldest(backbone, tmp_path):
    registry = Registry(FolderStore(tmp_path), MultiTaskEngine(backbone), keep_versions=2)
    registry.load()
    for seed in range(3):
        registry.upload("t", patch(backbone, "t", seed))
    assert sorted(registry.versions("t")) == [2, 3]
    registry.activate("t", 2)
    registry.upload("t", patch(backbone, "t", 7))
    assert sorted(registry.versions("t")) == [3, 4] and registry.active_version("t") == 4
    assert sorted(p.name for p in (tmp_path / "t").glob("v*")) == [
        "v3.safetensors",
        "v4.safetensors",
    ]
    assert registry.engine.registered_keys() == ["t@4"]


def test_keep_versions_keeps_a_new_candidate_and_the_rollouts_versions(backbone, tmp_path):
    from bitpatch.server.core.rollouts import parse_rollout

    registry = Registry(FolderStore(tmp_path), MultiTaskEngine(backbone), keep_versions=1)
    registry.load()
    registry.upload("t", patch(backbone, "t", 1))
    registry.upload("t", patch(backbone, "t", 2), activate=False)
    assert sorted(registry.versions("t")) == [1, 2] and registry.active_version("t") == 1
    registry.set_rollout("t", parse_rollout({"canary": {"version": 2, "percent": 5}}))
    registry.upload("t", patch(backbone, "t", 3), activate=False)
    assert sorted(registry.versions("t")) == [1, 2, 3]  # active, canary, the new candidate
    registry.promote("t")
    assert registry.active_version("t") == 2 and not registry.rollout("t").live
    reloaded = Registry(FolderStore(tmp_path), MultiTaskEngine(backbone))
    reloaded.load()
    assert reloaded.active_version("t") == 2 and reloaded.rollout("t").ended.reason.startswith(
        "promoted"
    )


def test_version_numbers_are_claimed_exclusively(tmp_path):
    store = FolderStore(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "v1.safetensors").write_bytes(b"taken by another writer")
    assert store.add_version("t", b"mine") == (2, True)
    assert store.read("t", 1) == b"taken by another writer"
    assert store.read("t", 2) == b"mine"


def test_delete_rules_and_pointer_file(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    registry.upload("t", patch(backbone, "t", 2))
    with pytest.raises(VersionActive, match="DELETE /tasks/t to remove"):
        registry.delete_version("t", 2)
    registry.delete_version("t", 1)
    assert json.loads((tmp_path / "t" / "task.json").read_text()) == {
        "active": 2,
        "next_version": 3,
    }
    registry.delete_task("t")
    assert not (tmp_path / "t").exists() and registry.tasks() == []


class GatedStore(FolderStore):
    """A folder store whose add_version waits at a gate: a slow disk or network."""

    def __init__(self, root):
        super().__init__(root)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def add_version(self, task, data, sha256="", activate=False):
        self.entered.set()
        self.gate.wait(10)
        return super().add_version(task, data, sha256, activate)


def test_leases_and_reads_never_wait_for_store_io(backbone, tmp_path):
    store = GatedStore(tmp_path)
    registry = Registry(store, MultiTaskEngine(backbone))
    registry.load()
    registry.upload("t", patch(backbone, "t", 1))
    store.gate.clear()
    store.entered.clear()
    upload = threading.Thread(target=registry.upload, args=("t", patch(backbone, "t", 2)))
    upload.start()
    assert store.entered.wait(10)
    started = time.monotonic()
    lease = registry.lease("t")  # while the upload sits in the store's I/O
    assert lease.version == 1 and sorted(registry.versions("t")) == [1]
    registry.release(lease)
    waited = time.monotonic() - started
    store.gate.set()
    upload.join()
    assert waited < 5  # not the gate's 10 s: the lease did not queue behind the upload
    assert registry.active_version("t") == 2


def test_sync_follows_another_writer_and_skips_bad_objects(backbone, tmp_path):
    writer, reader = fresh(backbone, tmp_path), fresh(backbone, tmp_path)
    writer.upload("t", patch(backbone, "t", 1))
    assert reader.sync() == 1 and reader.active_version("t") == 1
    assert reader.sync() == 0  # nothing changed: nothing looked at
    store = writer.store
    version, _ = store.add_version("t", b"half-written or corrupt")
    store.set_active("t", version)
    reader.sync()
    assert reader.active_version("t") == 1 and reader.skipped == 1  # never served
    writer.upload("t", patch(backbone, "t", 3))
    reader.sync()  # the bad object did not stop the sync
    assert reader.active_version("t") == 3
    reader.make_resident("t", 1)
    lease = reader.lease("t", 1)
    writer.delete_version("t", 1)
    reader.sync()
    assert "t@1" in reader.engine.registered_keys()  # pinned by the lease until released
    reader.release(lease)
    assert "t@1" not in reader.engine.registered_keys()
    writer.delete_task("t")
    reader.sync()
    assert reader.tasks() == []


def test_management_through_a_replica_that_has_not_synced_yet(backbone, tmp_path):
    writer, other = fresh(backbone, tmp_path), fresh(backbone, tmp_path)
    writer.upload("t", patch(backbone, "t", 1))
    writer.upload("t", patch(backbone, "t", 2))
    other.activate("t", 1)  # no sync in between: it looks the version up in the store
    assert other.active_version("t") == 1
    other.delete_version("t", 2)
    assert writer.store.record("t").versions == [1]
    other.delete_task("t")
    assert writer.store.record("t") is None
