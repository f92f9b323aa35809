"""A writer killed between two writes of a change loses nothing and leaves no replica stale:
for every step of an upload, activation, rollout, version deletion and task deletion, on a
folder and on S3 (a real moto server), a process writing to the store is killed right after
that step (the store's fault hook) and a running server on the same store must serve exactly
what the store holds within the sync bound."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from bitpatch.server.store import open_store
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch

SYNC_S = 0.2
BOUND_S = 5.0  # a sync interval, a store read, a patch load: far less than this
CASES = (
    [("upload", step) for step in ("begun", "version", "marker", "pointer")]
    + [("activate", step) for step in ("begun", "pointer")]
    + [("rollout", step) for step in ("begun", "pointer")]
    + [("delete_version", step) for step in ("begun", "marker", "version")]
    + [("delete_task", step) for step in ("begun", "moved")]
)
VISIBLE = {  # steps after which the store serves something else (a new version file counts)
    ("upload", "version"), ("upload", "marker"), ("upload", "pointer"), ("activate", "pointer"),
    ("rollout", "pointer"), ("delete_version", "version"), ("delete_task", "moved"),
}  # fmt: skip
ROLLOUT = {"id": "r1", "canary": {"version": 2, "percent": 30.0}, "shadow": None, "guard": None,
           "ended": None}  # fmt: skip

WRITER = """
import json, os, sys
from pathlib import Path
from bitpatch.server.store import open_store

url, op, step, task, extra = sys.argv[1:]
store = open_store(url)

def step_hook(name):
    if name == step:
        os._exit(137)  # killed: no cleanup, no further write

store._step = step_hook
if op == "upload":
    store.add_version(task, Path(extra).read_bytes(), activate=True)
elif op == "activate":
    store.set_active(task, 2)
elif op == "rollout":
    store.set_rollout(task, json.loads(extra))
elif op == "delete_version":
    store.delete_version(task, 2)
else:
    store.delete_task(task)
print("finished without reaching the step", file=sys.stderr)
sys.exit(3)
"""


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture
def patches(model, tmp_path, op, step):
    """Three versions' files for this case's task."""
    task = task_of(op, step)
    made = []
    for seed in range(3):
        path = tmp_path / f"v{seed + 1}.safetensors"
        path.write_bytes(random_patch(model, task, 3, "cls", seed=seed).to_bytes())
        made.append(path)
    return made


def task_of(op: str, step: str) -> str:
    return f"{op}-{step}".replace("_", "-")


@pytest.fixture(scope="module", params=["folder", "s3"])
def replica(request, tiny_bert_dir, tmp_path_factory):
    if request.param == "folder":
        url = str(tmp_path_factory.mktemp("crash-store") / "store")
    else:
        url = request.getfixturevalue("s3_server").bucket_url("crash-replica")
    args = ("--no-demo-patches", "--sync-interval", str(SYNC_S))
    logs = tmp_path_factory.mktemp("crash-logs")  # an S3 store has no folder for the log
    with ServerProcess(tiny_bert_dir, url, *args, log_dir=logs) as server:
        yield url, server


def served(http: httpx.Client, task: str) -> tuple:
    """What the server serves of a task: (active, versions, canary) or None when absent."""
    reply = http.get(f"/tasks/{task}")
    if reply.status_code == 404:
        return None
    rollout = http.get(f"/tasks/{task}/rollout")
    if rollout.status_code == 404:  # deleted between the two reads
        return None
    body = reply.json()
    return (
        body["active_version"],
        [v["version"] for v in body["versions"]],
        rollout.json()["canary"],
    )


def stored(url: str, task: str) -> tuple:
    """What a fresh reader of the store finds: the same shape as `served`."""
    record = open_store(url).record(task)
    if record is None:
        return None
    rollout = record.rollout or {}
    canary = rollout.get("canary") if rollout.get("ended") is None else None
    return record.active, record.versions, canary


@pytest.mark.parametrize(("op", "step"), CASES)
def test_every_replica_converges_after_a_writer_dies(replica, patches, op, step):
    url, server = replica
    task = task_of(op, step)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path, activate in ((patches[0], "true"), (patches[1], "false")):
            reply = http.put(f"/tasks/{task}/patch", params={"activate": activate},
                             content=path.read_bytes())  # fmt: skip
            assert reply.status_code == 201, reply.text
        before = served(http, task)
        assert before == (1, [1, 2], None)
        extra = json.dumps(ROLLOUT) if op == "rollout" else str(patches[2])
        killed = subprocess.run(
            [sys.executable, "-c", WRITER, url, op, step, task, extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert killed.returncode == 137, killed.stderr
        truth = stored(url, task)
        deadline = time.monotonic() + BOUND_S
        while (now := served(http, task)) != truth and time.monotonic() < deadline:
            time.sleep(0.05)
        assert now == truth, f"after {BOUND_S} s the replica serves {now}, the store holds {truth}"
        if (op, step) in VISIBLE:  # the step changed what is served: the replica followed it
            assert truth != before
