"""Registry over a real store: restarts, corrupt files, leases pinning versions."""

from __future__ import annotations

import json
import logging

import pytest

from bitpatch.patches.backbone import backbone_from_model
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.errors import ApiError
from bitpatch.server.registry import Registry
from bitpatch.server.store import PatchStore

from tiny import make_model, random_patch


@pytest.fixture(scope="module")
def backbone():
    model, tokenizer = make_model("bert")
    return backbone_from_model(model, tokenizer, "tiny")


def fresh(backbone, root) -> Registry:
    registry = Registry(PatchStore(root), MultiTaskEngine(backbone))
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
    (tmp_path / "good" / ".v3.safetensors.123.tmp").write_bytes(b"half")
    with caplog.at_level(logging.ERROR):
        again = fresh(backbone, tmp_path)
    assert again.tasks() == ["good"]
    assert again.active_version("good") == 1  # falls back to the newest valid version
    assert "patch_skipped" in caplog.text and "alien" in caplog.text
    assert not list(tmp_path.glob("good/.*.tmp"))


def test_lease_pins_version_until_released(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    lease = registry.acquire("t")
    registry.upload("t", patch(backbone, "t", 2))
    assert registry.active_version("t") == 2
    assert "t@1" in registry.engine.registered_keys()  # still pinned by the lease
    registry.release(lease)
    assert registry.engine.registered_keys() == ["t@2"]


def test_named_version_loads_on_demand(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    registry.upload("t", patch(backbone, "t", 2))
    lease = registry.acquire("t", 1)
    assert lease.version == 1 and "t@1" in registry.engine.registered_keys()
    registry.release(lease)
    assert registry.engine.registered_keys() == ["t@2"]


def test_delete_rules_and_pointer_file(backbone, tmp_path):
    registry = fresh(backbone, tmp_path)
    registry.upload("t", patch(backbone, "t", 1))
    registry.upload("t", patch(backbone, "t", 2))
    with pytest.raises(ApiError) as err:
        registry.delete_version("t", 2)
    assert err.value.status == 409
    registry.delete_version("t", 1)
    assert json.loads((tmp_path / "t" / "task.json").read_text()) == {
        "active": 2,
        "next_version": 3,
    }
    registry.delete_task("t")
    assert not (tmp_path / "t").exists() and registry.tasks() == []
