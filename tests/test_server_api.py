"""The REST contract, driven over HTTP against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.outputs import to_prediction
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch, random_sentence

TOKEN = "admin-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("api") / "store"
    with ServerProcess(
        tiny_bert_dir,
        store,
        "--no-demo-patches",
        "--admin-token",
        TOKEN,
        "--max-inputs",
        "8",
        "--max-upload-bytes",
        "65536",
    ) as srv:
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


class Expected:
    """What the engine computes for a patch: the reference every answer is checked against."""

    def __init__(self, folder):
        self.engine = MultiTaskEngine(load_backbone(str(folder), "float32", "cpu"))

    def __call__(self, patch, items):
        key = f"{patch.task}:{id(patch)}"
        if key not in self.engine.registered_keys():
            self.engine.register(key, patch)
        logits = self.engine.predict_logits(key, items)
        return [to_prediction(self.engine.state.heads[key], x) for x in logits]


@pytest.fixture(scope="module")
def expected(tiny_bert_dir):
    return Expected(tiny_bert_dir)


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if "value" in w:
            assert g["value"] == pytest.approx(w["value"], abs=1e-4)
        else:
            assert g["label"] == w["label"]
            for label, p in w["scores"].items():
                assert g["scores"][label] == pytest.approx(p, abs=1e-4)


def put(http, task, patch, headers=AUTH):
    return http.put(f"/tasks/{task}/patch", content=patch.to_bytes(), headers=headers)


ITEMS = ["the movie was great", ["a cat sat on the mat", "a dog runs"], "bad plot"]


def test_upload_predict_version_rollback_delete(http, model, expected):
    v1, v2 = (random_patch(model, "life", 3, "cls", seed=s) for s in (10, 11))
    r = put(http, "life", v1)
    assert r.status_code == 201 and r.json()["version"] == 1 and r.json()["created"]
    r = http.post("/tasks/life/predict", json={"inputs": ITEMS})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert_same(r.json()["predictions"], expected(v1, ITEMS))
    again = put(http, "life", v1)
    assert again.status_code == 200 and again.json()["version"] == 1
    assert not again.json()["created"]
    assert put(http, "life", v2).json()["version"] == 2
    r = http.post("/tasks/life/predict", json={"inputs": ITEMS})
    assert r.json()["version"] == 2
    assert_same(r.json()["predictions"], expected(v2, ITEMS))
    pinned = http.post("/tasks/life/predict", json={"inputs": ITEMS, "version": 1})
    assert_same(pinned.json()["predictions"], expected(v1, ITEMS))
    r = http.post("/tasks/life/versions/1/activate", headers=AUTH)
    assert r.status_code == 200 and r.json()["active_version"] == 1
    assert_same(
        http.post("/tasks/life/predict", json={"inputs": ITEMS}).json()["predictions"],
        expected(v1, ITEMS),
    )
    assert http.get("/tasks/life/versions/2/patch", headers=AUTH).content == v2.to_bytes()
    r = http.delete("/tasks/life/versions/1", headers=AUTH)
    assert r.status_code == 409 and "active" in r.json()["error"]["message"]
    assert http.delete("/tasks/life/versions/2", headers=AUTH).status_code == 200
    info = http.get("/tasks/life", headers=AUTH).json()
    assert [v["version"] for v in info["versions"]] == [1] and info["active_version"] == 1
    assert put(http, "life", v2).json()["version"] == 3  # numbers are never reused
    assert http.delete("/tasks/life", headers=AUTH).status_code == 200
    assert http.post("/tasks/life/predict", json={"inputs": ITEMS}).status_code == 404


def test_list_describe_and_ops(http, model):
    put(http, "listed", random_patch(model, "listed", 1, "mean", seed=3))
    tasks = {t["task"]: t for t in http.get("/tasks", headers=AUTH).json()["tasks"]}
    assert tasks["listed"]["kind"] == "regression" and tasks["listed"]["active_version"] >= 1
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    info = http.get("/info").json()
    assert info["dtype"] == "float32" and len(info["backbone_sha256"]) == 64
    assert info["cudnn_attention"] is False  # off by default (and always on CPU)
    assert set(info["kernel_cache"].values()) == {"64"}  # --kernel-cache reached the process
    value = http.post("/tasks/listed/predict", json={"inputs": ["x"]}).json()["predictions"]
    assert set(value[0]) == {"value"}


def test_startup_freezes_the_loaded_heap(server):
    """Full GC collections under traffic must not walk what loading created (gc_freeze)."""
    line = next(x for x in server.logs().splitlines() if "event=gc_frozen" in x)
    assert int(line.split("objects=")[1].split()[0]) > 10_000


def error_of(reply: httpx.Response, status: int, *words: str) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] and error["message"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


def test_predict_errors(http, model):
    put(http, "errs", random_patch(model, "errs", 2, "mean", seed=4))
    url = "/tasks/errs/predict"
    error_of(http.post("/tasks/missing/predict", json={"inputs": ["x"]}), 404, "missing")
    error_of(
        http.post(url, content=b"{not json", headers={"Content-Type": "application/json"}),
        422,
        "JSON",
    )
    error_of(http.post(url, json={"inputs": "text"}), 422, "inputs")
    error_of(http.post(url, json={"inputs": [1]}), 422, "inputs[0]")
    error_of(http.post(url, json={"inputs": []}), 422, "inputs")
    error_of(http.post(url, json={"inputs": ["a"] * 9}), 422, "9 inputs", "at most 8")
    error_of(http.post(url, json={"inputs": [["a"]]}), 422, "pair")
    error_of(http.post(url, json={"inputs": [["a", 2]]}), 422, "pair")
    error_of(http.post(url, json={"inputs": ["a"], "version": 99}), 404, "no version 99")
    error_of(http.post(url, json={"inputs": ["a"], "extra": 1}), 422, "extra")
    error_of(http.post("/tasks/Bad_Name/predict", json={"inputs": ["a"]}), 422, "not valid")


def test_upload_errors_keep_the_store_intact(http, model, tiny_roberta_dir):
    good = random_patch(model, "keep", 2, "mean", seed=5)
    put(http, "keep", good)
    before = http.get("/tasks/keep", headers=AUTH).json()
    error_of(put(http, "keep", good, headers={}), 401, "Bearer")
    error_of(put(http, "keep", good, headers={"Authorization": "Bearer wrong-token"}), 403)
    error_of(http.put("/tasks/keep/patch", content=b"x" * 70000, headers=AUTH), 413, "65536")
    error_of(http.put("/tasks/keep/patch", content=b"", headers=AUTH), 422, "empty")
    error_of(
        http.put("/tasks/keep/patch", content=b"garbage!" * 10, headers=AUTH), 422, "safetensors"
    )
    truncated = good.to_bytes()[:-100]
    error_of(http.put("/tasks/keep/patch", content=truncated, headers=AUTH), 422, "safetensors")
    error_of(put(http, "other", good), 422, "'keep'", "/tasks/keep/patch")
    foreign = random_patch(make_model("roberta")[0], "keep", 2, "mean", seed=5)
    error_of(put(http, "keep", foreign), 409, "retrain")
    bad_head = random_patch(model, "keep", 2, "mean", seed=6)
    bad_head.labels = ["a", "b", "c"]
    error_of(put(http, "keep", bad_head), 422, "head.weight")
    error_of(put(http, "UPPER", good), 422, "not valid")
    error_of(put(http, "a" * 65, good), 422, "not valid")
    assert http.get("/tasks/keep", headers=AUTH).json() == before


def test_management_auth(http, model):
    put(http, "authz", random_patch(model, "authz", 2, "cls", seed=7))
    put(http, "authz", random_patch(model, "authz", 2, "cls", seed=8))
    for method, url in (
        ("POST", "/tasks/authz/versions/1/activate"),
        ("DELETE", "/tasks/authz/versions/1"),
        ("DELETE", "/tasks/authz"),
    ):
        error_of(http.request(method, url), 401, "Bearer")
        error_of(http.request(method, url, headers={"Authorization": "Bearer nope-nope"}), 403)
    assert http.post("/tasks/authz/predict", json={"inputs": ["a"]}).status_code == 200
    assert http.get("/tasks/authz", headers=AUTH).json()["active_version"] == 2


def test_metrics_names(http, model):
    put(http, "metered", random_patch(model, "metered", 2, "cls", seed=9))
    http.post("/tasks/metered/predict", json={"inputs": ["a", "b"]})
    text = http.get("/metrics").text
    for name in (
        "bitpatch_requests_total",
        "bitpatch_request_seconds_bucket",
        "bitpatch_batch_rows_bucket",
        "bitpatch_batch_tasks_bucket",
        "bitpatch_forward_seconds_bucket",
        "bitpatch_queue_rows",
        "bitpatch_registered_tasks",
        "bitpatch_uploads_total",
        "bitpatch_activations_total",
        "bitpatch_rejections_total",
    ):
        assert name in text, name
    assert 'bitpatch_requests_total{api="native",status="200",task="metered"}' in text
    # the full collection before freezing the loaded heap (gc_freeze) was timed
    full = re.search(r'bitpatch_gc_pause_seconds_count\{generation="2"\} (\S+)', text)
    assert full and float(full.group(1)) >= 1


def test_recent_batches_show_each_forward(http, model, tiny_bert_dir):
    put(http, "shapes", random_patch(model, "shapes", 2, "cls", seed=12))
    last = http.get("/stats/batches").json()["last_id"]
    texts = ["a b c", "one two three four five six seven", ["a pair", "of texts"]]
    assert http.post("/tasks/shapes/predict", json={"inputs": texts}).status_code == 200
    reply = http.get("/stats/batches", params={"after": last}).json()
    batches = reply["batches"]
    assert [b["id"] for b in batches] == list(range(last + 1, reply["last_id"] + 1))
    tokenizer = load_backbone(str(tiny_bert_dir), "float32", "cpu").tokenizer
    tokens = [tokenizer(*([t] if isinstance(t, str) else t))["input_ids"] for t in texts]
    assert sorted(n for b in batches for n in b["lengths"]) == sorted(map(len, tokens))
    for b in batches:
        assert b["rows"] == len(b["lengths"]) and b["tasks"] == 1 and b["forward_ms"] > 0
        assert b["padded_length"] == max(b["lengths"])
    assert len(http.get("/stats/batches", params={"limit": 1}).json()["batches"]) == 1
    error_of(http.get("/stats/batches", params={"after": -1}), 422, "after")
    error_of(http.get("/stats/batches", params={"limit": 0}), 422, "limit")


def test_64_clients_over_8_tasks_with_uploads(server, model, expected):
    tasks = [f"mix{i}" for i in range(8)]
    shapes = [(2, "cls"), (3, "mean"), (5, "pooler"), (1, "mean")]
    versions = {
        t: [random_patch(model, t, *shapes[i % 4], seed=100 + 10 * i + v) for v in range(2)]
        for i, t in enumerate(tasks)
    }
    with httpx.Client(base_url=server.url) as http:
        for t in tasks:
            assert put(http, t, versions[t][0]).status_code == 201
    rng = random.Random(0)
    pool = [random_sentence(rng) for _ in range(40)] + [
        [random_sentence(rng), random_sentence(rng)] for _ in range(20)
    ]
    answers, errors = asyncio.run(_load(server.url, tasks, pool, versions))
    assert errors == []
    by_version = {}
    for task, items, reply in answers:
        version = reply["version"]
        by_version.setdefault((task, version), []).append((items, reply["predictions"]))
    assert {v for (_, v) in by_version} == {1, 2}  # uploads landed mid-traffic
    for (task, version), rows in by_version.items():
        patch = versions[task][version - 1]
        for items, got in rows:
            assert_same(got, expected(patch, items))


async def _load(url, tasks, pool, versions, clients=64, per_client=6):
    answers, errors = [], []

    async def client(i, http):
        rng = random.Random(i)
        for _ in range(per_client):
            task = rng.choice(tasks)
            items = rng.sample(pool, rng.randint(1, 3))
            r = await http.post(f"/tasks/{task}/predict", json={"inputs": items})
            if r.status_code != 200:
                errors.append(r.text)
            else:
                answers.append((task, items, r.json()))

    async def uploader(http):
        await asyncio.sleep(0.3)
        for t in tasks:
            r = await http.put(f"/tasks/{t}/patch", content=versions[t][1].to_bytes(), headers=AUTH)
            if r.status_code != 201:
                errors.append(r.text)

    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(uploader(http), *(client(i, http) for i in range(clients)))
    return answers, errors


def test_queue_full_answers_503(tiny_bert_dir, tmp_path, model):
    with (
        ServerProcess(
            tiny_bert_dir, tmp_path / "store", "--no-demo-patches", "--max-queue", "1"
        ) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        put(http, "q", random_patch(model, "q", 2, "cls", seed=1), headers={})
        reply = http.post("/tasks/q/predict", json={"inputs": ["a", "b"]})
        error_of(reply, 503, "queue")
        assert reply.headers["Retry-After"] == "1"
        assert http.post("/tasks/q/predict", json={"inputs": ["a"]}).status_code == 200


def test_predict_token(tiny_bert_dir, tmp_path, model):
    with (
        ServerProcess(
            tiny_bert_dir,
            tmp_path / "store",
            "--no-demo-patches",
            "--predict-token",
            "predict-secret",
        ) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        put(http, "p", random_patch(model, "p", 2, "cls", seed=1), headers={})
        error_of(http.post("/tasks/p/predict", json={"inputs": ["a"]}), 401, "Bearer")
        ok = http.post(
            "/tasks/p/predict",
            json={"inputs": ["a"]},
            headers={"Authorization": "Bearer predict-secret"},
        )
        assert ok.status_code == 200


def test_restart_keeps_tasks_versions_and_outputs(tiny_bert_dir, tmp_path, model):
    store = tmp_path / "store"
    patches = [random_patch(model, "keepme", 2, "mean", seed=s) for s in (1, 2, 3)]
    with (
        ServerProcess(tiny_bert_dir, store, "--no-demo-patches") as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        for p in patches:
            put(http, "keepme", p, headers={})
        put(http, "other", random_patch(model, "other", 1, "cls", seed=4), headers={})
        http.post("/tasks/keepme/versions/2/activate")
        before = (
            http.get("/tasks", headers=AUTH).json(),
            http.get("/tasks/keepme", headers=AUTH).json(),
            http.post("/tasks/keepme/predict", json={"inputs": ITEMS}).json(),
        )
    with (
        ServerProcess(tiny_bert_dir, store, "--no-demo-patches") as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        after = (
            http.get("/tasks", headers=AUTH).json(),
            http.get("/tasks/keepme", headers=AUTH).json(),
            http.post("/tasks/keepme/predict", json={"inputs": ITEMS}).json(),
        )
    assert after == before


def test_kill9_during_uploads_leaves_complete_versions(tiny_bert_dir, tmp_path, model, expected):
    store = tmp_path / "store"
    patches = [random_patch(model, "crash", 3, "mean", seed=s) for s in range(40)]
    for delay in (0.15, 0.4, 0.7):
        srv = ServerProcess(tiny_bert_dir, store, "--no-demo-patches").start()
        stop = threading.Event()
        thread = threading.Thread(target=_upload_until, args=(srv.url, patches, stop))
        thread.start()
        time.sleep(delay)
        srv.kill9()
        stop.set()
        thread.join()
        with (
            ServerProcess(tiny_bert_dir, store, "--no-demo-patches") as again,
            httpx.Client(base_url=again.url) as http,
        ):
            listed = http.get("/tasks/crash", headers=AUTH)
            if listed.status_code == 404:  # killed before any upload was acknowledged
                continue
            info = listed.json()
            for v in info["versions"]:
                data = http.get(f"/tasks/crash/versions/{v['version']}/patch", headers=AUTH).content
                assert data in {p.to_bytes() for p in patches}
            reply = http.post("/tasks/crash/predict", json={"inputs": ITEMS}).json()
            served = next(
                p
                for p in patches
                if p.to_bytes()
                == http.get(f"/tasks/crash/versions/{reply['version']}/patch", headers=AUTH).content
            )
            assert_same(reply["predictions"], expected(served, ITEMS))


def _upload_until(url, patches, stop):
    with httpx.Client(base_url=url, timeout=5) as http:
        for p in patches:
            if stop.is_set():
                return
            try:
                http.put("/tasks/crash/patch", content=p.to_bytes())
            except httpx.HTTPError:
                return


def test_python_client_and_push_command(server, model, tmp_path, capsys):
    from bitpatch.cli import main as cli_main
    from bitpatch.client import BitpatchError, Client

    path = tmp_path / "pushed.safetensors"
    random_patch(model, "pushed", 2, "mean", seed=21).save(path)
    with pytest.raises(SystemExit) as done:
        cli_main(["push", str(path), "--url", server.url, "--token", TOKEN])
    assert done.value.code == 0
    assert '"version": 1' in capsys.readouterr().out
    client = Client(server.url, token=TOKEN)
    assert client.predict("pushed", ["a cat"])["version"] == 1
    assert client.push(path)["created"] is False
    assert "pushed" in {t["task"] for t in client.tasks()}
    with pytest.raises(BitpatchError) as err:
        Client(server.url).delete("pushed")
    assert err.value.status == 401
    client.delete("pushed")
    client.close()


@pytest.mark.parametrize(
    ("mode", "workers", "widen"),
    [
        ("padded", 1, True),
        ("packed", 1, True),
        ("packed", 2, True),
        ("packed", 2, False),
        ("onnxruntime", 2, True),
        ("onnxruntime", 1, True),
        ("hybrid", 2, True),
    ],
)
def test_forward_modes_serve_the_engine_answers(
    tiny_bert_dir, tmp_path, model, expected, mode, workers, widen
):
    patches = [random_patch(model, f"m{i}", 2 + i, "mean", seed=40 + i) for i in range(3)]
    store = tmp_path / "store"
    flags = ("--no-demo-patches", "--forward", mode, "--workers", str(workers), "--threads", "2")
    flags += () if widen else ("--no-widen-lone-forwards",)
    with ServerProcess(tiny_bert_dir, store, *flags) as srv, httpx.Client(base_url=srv.url) as http:
        info = http.get("/info").json()
        assert (info["forward"], info["workers"]) == (mode, workers)
        kernels = {"onnxruntime": "onnxruntime", "hybrid": "onnxruntime+aten"}
        assert info["forward_kernel"] == kernels.get(mode, "aten")
        # express forwards by default only where forwards have layer breaks (no thread added)
        assert info["express_rows"] == (0 if mode == "padded" else 8)
        # a forward alone widens to both workers' threads; one worker has them anyway
        assert info["threads_per_worker"] == 2 // workers
        assert info["lone_forward_threads"] == (2 if widen else 2 // workers)
        assert info["gil_switch_ms"] == 0.2  # the default, set at start
        for p in patches:
            assert http.put(f"/tasks/{p.task}/patch", content=p.to_bytes()).status_code == 201
        with ThreadPoolExecutor(6) as pool:  # concurrent, so rows of all three tasks batch together
            answers = list(pool.map(lambda p: predict_all(http, p.task), patches * 2))
    for p, got in zip(patches * 2, answers, strict=True):
        assert_same(got, expected(p, ITEMS))


def predict_all(http, task):
    return http.post(f"/tasks/{task}/predict", json={"inputs": ITEMS}).json()["predictions"]
