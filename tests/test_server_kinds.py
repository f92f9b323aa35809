"""Every task kind over HTTP against a real server: its response shape and values, fan-out
through several tasks, and the new validation errors."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
import torch

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.encoding import encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.outputs import to_predictions
from bitpatch.patches.patch_file import serialize
from bitpatch.testing import ServerProcess

from tiny import kind_patch, make_model

TOKEN = "kinds-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KINDS = ("classification", "regression", "multi_label", "token_classification", "embedding")
TEXTS = ["the cat sat on the mat", "a very funny film and a sad story"]


@pytest.fixture(scope="module")
def patches():
    model = make_model("bert")[0]
    made = {kind: kind_patch(model, kind, kind, seed=i) for i, kind in enumerate(KINDS)}
    made["frozen"] = replace(
        made["embedding"], task="frozen", biases={}, head_weight=None, head_bias=None
    )
    return made


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory, patches):
    store = tmp_path_factory.mktemp("kinds") / "store"
    args = ("--no-demo-patches", "--admin-token", TOKEN, "--max-inputs", "8")
    with ServerProcess(tiny_bert_dir, store, *args) as srv, httpx.Client(base_url=srv.url) as http:
        for task, patch in patches.items():
            reply = http.put(f"/tasks/{task}/patch", content=patch.to_bytes(), headers=AUTH)
            assert reply.status_code == 201, reply.text
        yield srv


@pytest.fixture(scope="module")
def expected(tiny_bert_dir, patches):
    """What the engine computes, offline, for a task and texts: the reference of every answer."""
    engine = MultiTaskEngine(load_backbone(str(tiny_bert_dir), "float32", "cpu"))
    for task, patch in patches.items():
        engine.register(task, patch)
    tokenizer = engine.backbone.tokenizer

    def predictions(task: str, texts: list[str]) -> list[dict]:
        head = engine.state.heads[task]
        rows = encode_inputs(tokenizer, texts, head.max_length, head.wants_offsets)
        logits = engine.predict_logits(task, texts)
        width = max(x.shape[0] for x in logits) if head.kind.per_token else 0
        if width:  # pad the token rows back to one tensor
            logits = [torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[0])) for x in logits]
        return to_predictions(head, torch.stack(logits), rows)

    return predictions


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def close(a, b) -> None:
    """Equal JSON documents, floats to 1e-4."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-4)
    else:
        assert a == b


@pytest.mark.parametrize("task", [*KINDS, "frozen"])
def test_each_kind_answers_in_its_shape(http, expected, task):
    reply = http.post(f"/tasks/{task}/predict", json={"inputs": TEXTS})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    close(predictions, expected(task, TEXTS))
    first = predictions[0]
    if task == "multi_label":
        assert set(first) == {"labels", "scores"} and set(first["labels"]) <= set(first["scores"])
    elif task == "token_classification":
        words = [t["text"] for t in first["tokens"]]
        assert words == TEXTS[0].split()
        assert {"text", "start", "end", "label", "score"} == set(first["tokens"][0])
        assert isinstance(first["entities"], list)  # the tags are B-/I-: always present
    elif task in ("embedding", "frozen"):
        vector = torch.tensor(first["embedding"])
        assert vector.shape == ((8,) if task == "embedding" else (32,))
        assert vector.norm().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("task", ["token_classification", "embedding"])
def test_pairs_are_refused_for_single_text_kinds(http, task):
    reply = http.post(f"/tasks/{task}/predict", json={"inputs": ["a", ["a", "b"]]})
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "input_mismatch"
    assert "inputs[1]" in error["message"] and repr(task) in error["message"]


def test_fan_out_answers_every_task_as_its_own_predict_does(http):
    tasks = ["classification", "multi_label", "token_classification", "frozen"]
    reply = http.post("/predict", json={"tasks": tasks, "inputs": TEXTS})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert list(results) == tasks
    for task in tasks:
        alone = http.post(f"/tasks/{task}/predict", json={"inputs": TEXTS}).json()
        close(results[task], alone)


def test_fan_out_errors_name_the_task(http):
    unknown = http.post("/predict", json={"tasks": ["classification", "nope"], "inputs": ["a"]})
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]["message"]
    pair = http.post(
        "/predict", json={"tasks": ["multi_label", "token_classification"], "inputs": [["a", "b"]]}
    )
    assert pair.status_code == 422
    assert "'token_classification'" in pair.json()["error"]["message"]
    many = http.post(
        "/predict", json={"tasks": ["classification", "regression"], "inputs": ["a"] * 5}
    )
    assert many.status_code == 422 and many.json()["error"]["code"] == "too_many_inputs"
    assert "2 tasks x 5 inputs" in many.json()["error"]["message"]
    twice = http.post("/predict", json={"tasks": ["frozen", "frozen"], "inputs": ["a"]})
    assert twice.status_code == 422 and "more than once" in twice.json()["error"]["message"]
    assert http.post("/predict", json={"tasks": [], "inputs": ["a"]}).status_code == 422


def test_rows_are_counted_per_kind(http):
    http.post("/predict", json={"tasks": ["token_classification", "embedding"], "inputs": ["a"]})
    metrics = http.get("/metrics").text
    for kind in ("token_classification", "embedding"):
        assert f'bitpatch_rows_total{{kind="{kind}"}}' in metrics
    batches = http.get("/stats/batches").json()["batches"]
    assert any("embedding" in b["kinds"] for b in batches)


def bad_upload(http, task: str, tensors: dict, meta: dict, *words: str) -> None:
    reply = http.put(f"/tasks/{task}/patch", content=serialize(tensors, meta), headers=AUTH)
    assert reply.status_code == 422, reply.text
    message = reply.json()["error"]["message"]
    for word in words:
        assert word in message, message


def parts(patch):
    tensors = {f"bias.{n}": t for n, t in patch.biases.items()}
    if patch.head_weight is not None:
        tensors |= {"head.weight": patch.head_weight, "head.bias": patch.head_bias}
    return tensors, patch.metadata()


def test_uploads_of_each_kind_are_checked_naming_the_key(http, patches):
    tensors, meta = parts(patches["token_classification"])
    wrong_rows = {
        **tensors,
        "head.weight": tensors["head.weight"][:3],
        "head.bias": tensors["head.bias"][:3],
    }
    bad_upload(http, "token_classification", wrong_rows, meta, "'head.weight'", "(5, hidden)")
    bad_upload(
        http, "token_classification", tensors, {**meta, "pooling": "mean"}, "'pooling'", "'none'"
    )
    tensors, meta = parts(patches["multi_label"])
    bad_upload(
        http,
        "multi_label",
        tensors,
        {**meta, "thresholds": "[0.5, 0.5]"},
        "'thresholds'",
        "3 labels",
    )
    both = {**meta, "threshold": "0.4"}
    bad_upload(http, "multi_label", tensors, both, "'threshold'", "'thresholds'")
    bad_upload(http, "multi_label", tensors, {**meta, "thresholds": "[0.5, 2, 0.5]"}, "[0, 1]")
    tensors, meta = parts(patches["embedding"])
    bad_upload(http, "embedding", tensors, {**meta, "labels": json.dumps(["a", "b"])}, "'labels'")
    bad_upload(http, "embedding", tensors, {**meta, "normalize": "yes"}, "'normalize'")
    no_bias = {k: v for k, v in tensors.items() if k != "head.bias"}
    bad_upload(http, "embedding", no_bias, meta, "'head.bias'", "both or neither")
    tensors, meta = parts(patches["classification"])
    bad_upload(http, "classification", tensors, {**meta, "pooling": "none"}, "'pooling'")
