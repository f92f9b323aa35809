"""Rollouts over REST against a real server on 127.0.0.1: candidates, the canary split by key,
shadow rows compared in the same forward, labelled evaluation, the guard, promotion."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import httpx
import pytest

from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch, random_sentence

TOKEN = "admin-token-rollouts"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCES = [random_sentence(random.Random(i)) for i in range(40)]


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("rollouts") / "store"
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--admin-token", TOKEN) as srv:
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        yield client


def upload(http, task: str, data: bytes, activate: bool = True) -> httpx.Response:
    params = {} if activate else {"activate": "false"}
    return http.put(f"/tasks/{task}/patch", content=data, params=params)


def two_versions(http, model, task: str, seeds=(1, 2), labels: int = 2) -> bytes:
    """v1 active, v2 a candidate (its bytes returned)."""
    first = random_patch(model, task, labels, "cls", seed=seeds[0]).to_bytes()
    second = random_patch(model, task, labels, "cls", seed=seeds[1]).to_bytes()
    assert upload(http, task, first).status_code == 201
    reply = upload(http, task, second, activate=False)
    assert reply.status_code == 201, reply.text
    assert reply.json()["active"] is False
    return second


def predict(http, task: str, inputs, key: str | None = None, version: int | None = None):
    headers = {"X-Bitpatch-Key": key} if key is not None else {}
    body = {"inputs": inputs} | ({"version": version} if version else {})
    reply = http.post(f"/tasks/{task}/predict", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_candidate_is_stored_without_serving(http, model):
    candidate = two_versions(http, model, "cand")
    assert predict(http, "cand", ["a b"])["version"] == 1
    listed = http.get("/tasks/cand").json()["versions"]
    assert [(v["version"], v["active"]) for v in listed] == [(1, True), (2, False)]
    again = upload(http, "cand", candidate, activate=False)
    assert again.status_code == 200 and again.json()["version"] == 2


def test_rollout_errors_say_what_to_send(http, server, model):
    two_versions(http, model, "bad")
    cases = [
        ({}, 422, "canary or a shadow"),
        ({"canary": {"version": 2, "percent": 0}}, 422, "percent"),
        ({"canary": {"version": 2, "percent": 101}}, 422, "percent"),
        ({"canary": {"version": "2", "percent": 5}}, 422, "version"),
        ({"canary": {"version": 2, "percent": 5}, "extra": 1}, 422, "unknown field"),
        ({"shadow": {"version": 2, "percent": 5}, "guard": {"metric": "f1"}}, 422, "guard"),
        (
            {
                "canary": {"version": 2, "percent": 5},
                "guard": {"metric": "agreement", "min_rows": 5, "max_drop": 1},
            },
            422,
            "shadow",
        ),  # fmt: skip
        ({"canary": {"version": 9, "percent": 5}}, 404, "no version 9"),
        ({"canary": {"version": 1, "percent": 5}}, 409, "active version"),
    ]
    for body, status, words in cases:
        reply = http.put("/tasks/bad/rollout", json=body)
        assert reply.status_code == status, (body, reply.text)
        assert words in reply.json()["error"]["message"], reply.text
    assert http.put("/tasks/nope/rollout", json=cases[1][0]).status_code in (404, 422)
    good = {"canary": {"version": 2, "percent": 5}}
    assert http.put("/tasks/nope/rollout", json=good).status_code == 404
    assert httpx.put(f"{server.url}/tasks/bad/rollout", json=good).status_code == 401
    assert http.get("/tasks/bad/rollout").json()["canary"] is None


async def keyed_versions(url: str, task: str, keys: list[str]) -> dict[str, int]:
    """The version that answers each key (one request per key, 32 at a time)."""
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(key: str) -> tuple[str, int]:
            async with limit:
                reply = await client.post(
                    f"/tasks/{task}/predict",
                    json={"inputs": ["a short sentence"]},
                    headers={"X-Bitpatch-Key": key},
                )
                return key, reply.json()["version"]

        return dict(await asyncio.gather(*(one(k) for k in keys)))


def test_the_canary_takes_its_share_by_key(http, server, model):
    two_versions(http, model, "split")
    keys = [f"user-{i}" for i in range(2000)]
    assert http.put(
        "/tasks/split/rollout", json={"canary": {"version": 2, "percent": 20}}
    ).is_success
    first = asyncio.run(keyed_versions(server.url, "split", keys))
    share = 100 * sum(v == 2 for v in first.values()) / len(keys)
    assert abs(share - 20) <= 3, share
    again = asyncio.run(keyed_versions(server.url, "split", keys[:200]))
    assert all(first[k] == again[k] for k in again)  # stable per key
    assert predict(http, "split", ["x"], key=keys[0], version=1)["version"] == 1  # pinned wins
    wider = {"canary": {"version": 2, "percent": 50}}
    assert http.put("/tasks/split/rollout", json=wider).is_success
    raised = asyncio.run(keyed_versions(server.url, "split", keys[:400]))
    assert all(raised[k] == 2 for k in raised if first[k] == 2)  # keys on the canary stay
    figures = http.get("/tasks/split/rollout").json()
    assert figures["canary"] == {"version": 2, "percent": 50.0} and figures["scope"] == "replica"
    served = figures["figures"]
    assert served["1"]["served"] + served["2"]["served"] == 400  # since this rollout began


def test_shadow_answers_are_the_serving_versions_and_agreement_is_recomputed(http, model):
    two_versions(http, model, "shadowed", seeds=(3, 4), labels=3)
    body = {"shadow": {"version": 2, "percent": 100}}
    assert http.put("/tasks/shadowed/rollout", json=body).is_success
    batches = [SENTENCES[i : i + 5] for i in range(0, 40, 5)]
    active = [predict(http, "shadowed", b, version=1) for b in batches]
    shadow = [predict(http, "shadowed", b, version=2) for b in batches]  # now resident
    answers = [predict(http, "shadowed", b) for b in batches]
    assert all(a["version"] == 1 for a in answers)
    pairs = []
    for got, want, other in zip(answers, active, shadow, strict=True):
        for g, w, s in zip(
            got["predictions"], want["predictions"], other["predictions"], strict=True
        ):
            assert g["label"] == w["label"]
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
            pairs.append((w, s))
    agreement = 100 * sum(w["label"] == s["label"] for w, s in pairs) / len(pairs)
    difference = sum(
        sum(abs(w["scores"][k] - s["scores"][k]) for k in w["scores"]) / 3 for w, s in pairs
    ) / len(pairs)
    figures = wait_figures(http, "shadowed", "2", "shadow_rows", 40)
    assert figures["agreement"] == pytest.approx(agreement, abs=1e-6)
    assert figures["difference"] == pytest.approx(difference, abs=1e-4)
    metrics = http.get("/metrics").text
    assert (
        'bitpatch_rollout_figure{figure="shadow_rows",task="shadowed",version="2"} 40.0' in metrics
    )


def wait_figures(http, task: str, version: str, figure: str, want: int) -> dict:
    """The version's figures once `figure` reaches `want` (shadow rows are compared after the
    answer went out)."""
    for _ in range(100):
        found = http.get(f"/tasks/{task}/rollout").json()["figures"].get(version, {})
        if found.get(figure) == want:
            return found
        asyncio.run(asyncio.sleep(0.05))
    raise AssertionError(f"{figure} of version {version} never reached {want}: {found}")


def test_evaluate_scores_every_version_in_one_call(http, model):
    two_versions(http, model, "judged", seeds=(5, 6), labels=3)
    assert http.put(
        "/tasks/judged/rollout", json={"canary": {"version": 2, "percent": 10}}
    ).is_success
    inputs = SENTENCES[:12]
    labels = [random.Random(i).choice(["label_0", "label_1", "label_2"]) for i in range(12)]
    reply = http.post("/tasks/judged/evaluate", json={"inputs": inputs, "labels": labels})
    assert reply.status_code == 200, reply.text
    for version in (1, 2):
        got = predict(http, "judged", inputs, version=version)["predictions"]
        accuracy = 100 * sum(p["label"] == y for p, y in zip(got, labels, strict=True)) / 12
        answer = reply.json()["figures"][str(version)]
        assert answer == {"rows": 12, "metric": "accuracy", "value": pytest.approx(accuracy)}
        running = http.get("/tasks/judged/rollout").json()["figures"][str(version)]
        assert running["evaluated"] == 12 and running["value"] == pytest.approx(accuracy)
    wrong = http.post("/tasks/judged/evaluate", json={"inputs": ["a"], "labels": ["nope"]})
    assert wrong.status_code == 422 and "label_0" in wrong.json()["error"]["message"]
    short = http.post("/tasks/judged/evaluate", json={"inputs": ["a", "b"], "labels": ["label_0"]})
    assert short.status_code == 422 and "one label per input" in short.json()["error"]["message"]


def test_a_guard_ends_the_rollout_of_a_worse_version(http, model):
    good = random_patch(model, "guarded", 3, "cls", seed=7)
    bad = replace(good, head_weight=-good.head_weight, head_bias=-good.head_bias)  # argmin
    assert upload(http, "guarded", good.to_bytes()).status_code == 201
    assert upload(http, "guarded", bad.to_bytes(), activate=False).status_code == 201
    inputs = SENTENCES[:30]
    labels = [p["label"] for p in predict(http, "guarded", inputs)["predictions"]]  # v1: 100%
    canary = predict(http, "guarded", inputs, version=2)["predictions"]
    assert sum(p["label"] != y for p, y in zip(canary, labels, strict=True)) >= 5, "too alike"
    body = {
        "canary": {"version": 2, "percent": 50},
        "guard": {"metric": "accuracy", "min_rows": 20, "max_drop": 5},
    }
    assert http.put("/tasks/guarded/rollout", json=body).is_success
    reply = http.post("/tasks/guarded/evaluate", json={"inputs": inputs, "labels": labels})
    assert reply.json()["figures"]["1"]["value"] == 100.0
    for _ in range(100):
        state = http.get("/tasks/guarded/rollout").json()
        if state["ended"] is not None:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert state["canary"] is None and state["ended"]["reason"].startswith("guard: version 2")
    assert state["ended"]["at"].endswith("Z")
    keys = [f"k{i}" for i in range(40)]
    assert all(predict(http, "guarded", ["x"], key=k)["version"] == 1 for k in keys)
    assert 'bitpatch_rollouts_aborted_total{task="guarded"} 1.0' in http.get("/metrics").text


def test_promote_makes_the_canary_active_and_ends_the_rollout(http, model):
    two_versions(http, model, "promoted", seeds=(9, 10))
    assert http.post("/tasks/promoted/rollout/promote").status_code == 409
    body = {"canary": {"version": 2, "percent": 10}, "shadow": None}
    assert http.put("/tasks/promoted/rollout", json=body).is_success
    conflict = http.delete("/tasks/promoted/versions/2")
    assert conflict.status_code == 409 and "rollout" in conflict.json()["error"]["message"]
    reply = http.post("/tasks/promoted/rollout/promote")
    assert reply.status_code == 200, reply.text
    assert reply.json()["active"] == 2 and reply.json()["ended"]["reason"] == "promoted version 2"
    assert predict(http, "promoted", ["a b"], key="anyone")["version"] == 2


def test_delete_ends_the_rollout(http, model):
    two_versions(http, model, "ended", seeds=(11, 12))
    assert http.put(
        "/tasks/ended/rollout", json={"canary": {"version": 2, "percent": 100}}
    ).is_success
    assert predict(http, "ended", ["a"], key="u")["version"] == 2
    reply = http.delete("/tasks/ended/rollout")
    assert reply.status_code == 200 and reply.json()["ended"]["reason"] == "ended by request"
    assert predict(http, "ended", ["a"], key="u")["version"] == 1
    assert http.delete("/tasks/ended/versions/2").status_code == 200  # no longer in a rollout


def test_an_upload_whose_examples_differ_is_refused(http, model, tiny_bert_dir):
    from bitpatch.patches.backbone import load_backbone
    from bitpatch.patches.engine import MultiTaskEngine

    engine = MultiTaskEngine(load_backbone(str(tiny_bert_dir), "float32", "cpu"))
    patch = random_patch(model, "golden", 3, "cls", seed=21)
    engine.register("golden", patch)
    items = ["the cat sat", ["a pair", "of texts"]]
    right = [
        {"input": i, "output": o}
        for i, o in zip(items, engine.predict("golden", items), strict=True)
    ]
    tampered = [right[0], {"input": items[1], "output": {**right[1]["output"], "score": 0.5}}]
    refused = upload(http, "golden", replace(patch, examples=tampered).to_bytes())
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "parity_failed"
    assert "examples[1]" in error["message"] and "a pair" in error["message"]
    assert "0.5" in error["message"] and "score" in error["message"]
    assert http.get("/tasks/golden").status_code == 404  # nothing stored
    assert upload(http, "golden", replace(patch, examples=right).to_bytes()).status_code == 201


def test_an_agreement_guard_ends_a_shadow_that_disagrees(http, model):
    good = random_patch(model, "agreed", 3, "cls", seed=23)
    bad = replace(good, head_weight=-good.head_weight, head_bias=-good.head_bias)  # argmin
    assert upload(http, "agreed", good.to_bytes()).status_code == 201
    assert upload(http, "agreed", bad.to_bytes(), activate=False).status_code == 201
    predict(http, "agreed", ["warm"], version=2)  # resident, so every request is shadowed
    body = {
        "shadow": {"version": 2, "percent": 100},
        "guard": {"metric": "agreement", "min_rows": 10, "max_drop": 5},
    }
    assert http.put("/tasks/agreed/rollout", json=body).is_success
    for batch in (SENTENCES[:6], SENTENCES[6:12]):
        assert predict(http, "agreed", batch)["version"] == 1
    for _ in range(100):
        state = http.get("/tasks/agreed/rollout").json()
        if state["ended"] is not None:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert (
        state["shadow"] is None
        and "agreed with the serving version on 0.00%" in (state["ended"]["reason"])
    )
    assert state["figures"]["2"]["shadow_rows"] == 12


def test_an_agreement_guard_on_a_regression_is_refused(http, model):
    for seed, activate in ((25, True), (26, False)):
        data = random_patch(model, "scored", 1, "cls", seed=seed).to_bytes()
        assert upload(http, "scored", data, activate=activate).status_code == 201
    body = {
        "shadow": {"version": 2, "percent": 100},
        "guard": {"metric": "agreement", "min_rows": 10, "max_drop": 5},
    }
    refused = http.put("/tasks/scored/rollout", json=body)
    assert refused.status_code == 422 and "regression" in refused.json()["error"]["message"]
    body["guard"]["metric"] = "accuracy"
    assert http.put("/tasks/scored/rollout", json=body).is_success
