"""A real server on a store it did not write: ready with nothing decoded, every task loaded by
its first requests (many at once), a restart from the snapshot the first server wrote, and
--max-resident bounding what stays decoded."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bitpatch.server.store.folder import FolderStore
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch

TASKS = 24


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    model = make_model("bert")[0]
    root = tmp_path_factory.mktemp("cold") / "store"
    folder = FolderStore(root)
    for i in range(TASKS):
        data = random_patch(model, f"t{i:02d}", 2, "cls", seed=i).to_bytes()
        folder.add_version(f"t{i:02d}", data, activate=True)
    return root


def predict(url: str, task: str) -> int:
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.post(f"/tasks/{task}/predict", json={"inputs": ["a b"]}).status_code


def test_first_requests_load_each_task_once_even_all_at_once(tiny_bert_dir, store):
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--sync-interval", "0.2") as s:
        info = httpx.get(f"{s.url}/info").json()
        assert info["tasks"] == TASKS and info["resident_versions"] == 0
        assert info["loaded_from"] == "store"
        wanted = [f"t{i % 8:02d}" for i in range(64)]  # 8 tasks, 8 concurrent first uses each
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda t: predict(s.url, t), wanted))
        assert statuses == [200] * 64
        assert httpx.get(f"{s.url}/info").json()["resident_versions"] == 8
        deadline = time.monotonic() + 10  # the first sync after the start writes one
        while not list(store.glob(".snapshots/*.json.gz")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(store.glob(".snapshots/*.json.gz"))
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--max-resident", "3") as s:
        assert httpx.get(f"{s.url}/info").json()["loaded_from"] == "snapshot"
        for i in range(6):
            assert predict(s.url, f"t{i:02d}") == 200
        assert httpx.get(f"{s.url}/info").json()["resident_versions"] == 3
        assert predict(s.url, "t00") == 200  # loaded again after it left
