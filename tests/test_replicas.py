"""Three real `bitpatch serve` processes on one store (a folder, and S3 on a real moto server):
every change made through one replica is served by all, versions stay unique, nothing
acknowledged is lost, and an unreachable store never fails a prediction."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bitpatch.testing import ServerProcess, started_together

from tiny import make_model, random_patch

SYNC = "0.3"
BOUND = 10.0  # seconds a change may take to reach every replica here (target: ~2 s)


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url")


def replicas(backbone, store: str, root, n: int = 3, *flags: str):
    flags = ("--no-demo-patches", "--sync-interval", SYNC, *flags)
    return started_together(
        [ServerProcess(backbone, store, *flags, log_dir=root) for _ in range(n)]
    )


def served_version(url: str, task: str) -> int | None:
    reply = httpx.post(f"{url}/tasks/{task}/predict", json={"inputs": ["a b c"]}, timeout=10)
    return reply.json()["version"] if reply.status_code == 200 else None


def wait_for(check, timeout: float = BOUND) -> float:
    """Seconds until check() is true (fails after `timeout`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not converged in time"
        time.sleep(0.05)
    return time.monotonic() - started


def put(url: str, task: str, data: bytes) -> httpx.Response:
    return httpx.put(f"{url}/tasks/{task}/patch", content=data, timeout=30)


def test_every_change_reaches_every_replica(tiny_bert_dir, tmp_path, store, model):
    v1, v2 = (random_patch(model, "t", 2, "cls", seed=s).to_bytes() for s in (1, 2))
    with replicas(tiny_bert_dir, store, tmp_path) as (a, b, c):
        assert put(a.url, "t", v1).status_code == 201
        assert served_version(a.url, "t") == 1  # the writer reads its own write at once
        for r in (b, c):
            wait_for(lambda r=r: served_version(r.url, "t") == 1)
        assert put(b.url, "t", v2).json()["version"] == 2
        for r in (a, c):
            wait_for(lambda r=r: served_version(r.url, "t") == 2)
        assert httpx.post(f"{c.url}/tasks/t/versions/1/activate").status_code == 200
        for r in (a, b):
            wait_for(lambda r=r: served_version(r.url, "t") == 1)
        assert httpx.delete(f"{a.url}/tasks/t/versions/2").status_code == 200
        for r in (b, c):
            wait_for(lambda r=r: versions_of(r.url, "t") == [1])
        assert httpx.delete(f"{b.url}/tasks/t").status_code == 200
        for r in (a, c):
            wait_for(lambda r=r: served_version(r.url, "t") is None)


def replica_of(url: str) -> str | None:
    reply = httpx.get(f"{url}/info", timeout=10)
    return reply.json()["replica"] if reply.status_code == 200 else None


def active_versions(url: str) -> dict[str, int]:
    tasks = httpx.get(f"{url}/tasks", timeout=10).json()["tasks"]
    return {t["task"]: t["active_version"] for t in tasks}


def versions_of(url: str, task: str) -> list[int] | None:
    reply = httpx.get(f"{url}/tasks/{task}", timeout=10)
    return [v["version"] for v in reply.json()["versions"]] if reply.status_code == 200 else None


def test_concurrent_uploads_over_three_replicas(tiny_bert_dir, tmp_path, store, model):
    patches = [random_patch(model, "race", 2, "mean", seed=s).to_bytes() for s in range(20)]
    with replicas(tiny_bert_dir, store, tmp_path) as servers:
        with ThreadPoolExecutor(20) as pool:
            replies = list(
                pool.map(lambda i: put(servers[i % 3].url, "race", patches[i]), range(20))
            )
        assert [r.status_code for r in replies] == [201] * 20
        sent = {r.json()["version"]: patches[i] for i, r in enumerate(replies)}
        assert sorted(sent) == list(range(1, 21))  # distinct, none lost
        for server in servers:
            wait_for(lambda s=server: versions_of(s.url, "race") == list(range(1, 21)))
            for version, data in sent.items():
                url = f"{server.url}/tasks/race/versions/{version}/patch"
                assert httpx.get(url, timeout=10).content == data
        same = put(servers[1].url, "race", patches[0])  # identical bytes, another replica
        assert same.status_code == 200 and same.json()["version"] == replies[0].json()["version"]


def test_identical_bytes_on_two_fresh_replicas_are_one_version(tiny_bert_dir, tmp_path, store):
    data = random_patch(make_model("bert")[0], "twin", 2, "cls", seed=9).to_bytes()
    with replicas(tiny_bert_dir, store, tmp_path, 2) as (a, b):
        first, second = put(a.url, "twin", data), put(b.url, "twin", data)
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["version"] == second.json()["version"] == 1


def test_kill9_of_a_replica_loses_no_acknowledged_upload(tiny_bert_dir, tmp_path, store, model):
    patches = [random_patch(model, "crash", 2, "mean", seed=s).to_bytes() for s in range(60)]
    acked: dict[int, bytes] = {}
    with replicas(tiny_bert_dir, store, tmp_path) as (a, b, c):

        def upload():
            for data in patches:
                try:
                    reply = put(a.url, "crash", data)
                except httpx.HTTPError:
                    return
                if reply.status_code == 201:
                    acked[reply.json()["version"]] = data

        thread = threading.Thread(target=upload)
        thread.start()
        wait_for(lambda: len(acked) >= 5)
        a.kill9()
        thread.join()
        for r in (b, c):
            wait_for(lambda r=r: set(acked) <= set(versions_of(r.url, "crash") or []))
            for version, data in acked.items():
                url = f"{r.url}/tasks/crash/versions/{version}/patch"
                assert httpx.get(url, timeout=10).content == data


def test_frozen_s3_store_never_fails_a_prediction(tiny_bert_dir, tmp_path, s3_url, s3_server):
    model = make_model("bert")[0]
    v1, v2, v3 = (random_patch(model, "f", 2, "cls", seed=s).to_bytes() for s in (1, 2, 3))
    with replicas(tiny_bert_dir, s3_url, tmp_path, 2) as (a, b):
        assert put(a.url, "f", v1).status_code == 201
        wait_for(lambda: served_version(b.url, "f") == 1)
        failures, stop = [], threading.Event()

        def predict_forever():
            while not stop.is_set():
                for r in (a, b):
                    if served_version(r.url, "f") is None:
                        failures.append(r.url)

        traffic = threading.Thread(target=predict_forever)
        traffic.start()
        s3_server.freeze()
        try:
            started = time.monotonic()
            refused = put(b.url, "f", v2)
            took = time.monotonic() - started
            time.sleep(max(0.0, 10 - took))
        finally:
            s3_server.thaw()
        assert refused.status_code == 503 and "unreachable" in refused.json()["error"]["message"]
        assert took < 12
        assert put(b.url, "f", v3).status_code == 201  # writes work again
        wait_for(lambda: served_version(a.url, "f") == 2)  # and the other replica converges
        stop.set()
        traffic.join()
        assert failures == []
        metrics = httpx.get(f"{a.url}/metrics").text
        assert "bitpatch_sync_errors_total" in metrics


@pytest.mark.slow
def test_replicas_started_together_seed_the_demo_patches_once(tmp_path):
    store = tmp_path / "store"
    servers = [ServerProcess("default", store, "--sync-interval", SYNC) for _ in range(3)]
    with started_together(servers):
        demo = {"embedding": 1, "paraphrase": 1, "sentiment": 1, "similarity": 1}
        for server in servers:  # a replica that found some seeded already syncs the rest
            wait_for(lambda s=server: active_versions(s.url) == demo)
        assert sorted(p.name for p in (store / "sentiment").glob("v*")) == ["v1.safetensors"]


def test_processes_share_one_port_and_converge(tiny_bert_dir, tmp_path, model):
    store = tmp_path / "store"
    flags = ("--no-demo-patches", "--processes", "2", "--sync-interval", SYNC)
    with ServerProcess(tiny_bert_dir, store, *flags) as srv:
        seen: set[str | None] = set()  # a process still loading answers 503 (no replica id)
        wait_for(lambda: seen.add(replica_of(srv.url)) or len(seen - {None}) == 2)
        data = random_patch(model, "proc", 2, "cls", seed=4).to_bytes()
        assert put(srv.url, "proc", data).status_code == 201
        # new connections land on either process: both serve it within the bound
        wait_for(lambda: all(served_version(srv.url, "proc") == 1 for _ in range(10)))


def test_a_rollout_reaches_every_replica_and_survives_a_restart(
    tiny_bert_dir, tmp_path, store, model
):
    v1, v2 = (random_patch(model, "t", 2, "cls", seed=s).to_bytes() for s in (31, 32))
    keys = [f"key-{i}" for i in range(30)]

    def versions(url: str) -> list[int | None]:
        return [keyed_version(url, "t", key) for key in keys]

    with replicas(tiny_bert_dir, store, tmp_path) as servers:
        urls = [s.url for s in servers]
        assert put(urls[0], "t", v1).status_code == 201
        reply = httpx.put(f"{urls[1]}/tasks/t/patch?activate=false", content=v2, timeout=30)
        assert reply.status_code == 201 and reply.json()["active"] is False
        wait_for(lambda: all(served_version(u, "t") == 1 for u in urls))
        canary = {"canary": {"version": 2, "percent": 50}}
        assert httpx.put(f"{urls[2]}/tasks/t/rollout", json=canary, timeout=30).is_success
        want = versions(urls[2])
        assert set(want) == {1, 2}
        wait_for(lambda: all(versions(u) == want for u in urls[:2]))
        assert all(httpx.get(f"{u}/tasks/t/rollout").json()["canary"] for u in urls)
    with replicas(tiny_bert_dir, store, tmp_path, 1) as (restarted,):
        assert versions(restarted.url) == want
        promoted = httpx.post(f"{restarted.url}/tasks/t/rollout/promote", timeout=30)
        assert promoted.json()["active"] == 2
        assert set(versions(restarted.url)) == {2}


def keyed_version(url: str, task: str, key: str) -> int | None:
    body = {"inputs": ["a b c"]}
    reply = httpx.post(f"{url}/tasks/{task}/predict", json=body, headers={"X-Bitpatch-Key": key})
    return reply.json()["version"] if reply.status_code == 200 else None
