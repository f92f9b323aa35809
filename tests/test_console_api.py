"""What the console reads from the server, over HTTP against a real server: the static files
and their headers, /whoami, paged task listings, task descriptions, /stats/traffic."""

from __future__ import annotations

import re

import httpx
import pytest

from bitpatch.client import Client
from bitpatch.server.http.console import UI_DIR
from bitpatch.testing import ServerProcess

from tiny import kind_patch, make_model

ADMIN, PREDICT = "console-admin-token", "console-predict-token"
KINDS = ("classification", "regression", "multi_label", "token_classification", "embedding")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    model = make_model("bert")[0]
    store = tmp_path_factory.mktemp("console") / "store"
    args = ("--no-demo-patches", "--admin-token", ADMIN, "--predict-token", PREDICT)
    with ServerProcess(tiny_bert_dir, store, *args) as srv, httpx.Client(base_url=srv.url) as http:
        for i, kind in enumerate(KINDS):
            for name in (f"{kind}", f"team-{i}-{kind}"):
                patch = kind_patch(model, kind, name, seed=i)
                reply = http.put(
                    f"/tasks/{name}/patch", content=patch.to_bytes(), headers=bearer(ADMIN)
                )
                assert reply.status_code == 201, reply.text
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_root_sends_to_the_console_and_its_page_has_a_strict_policy(http):
    root = http.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = http.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text.replace('<script type="module" src="/ui/js/app.js">', "")


def test_every_module_the_console_imports_is_served_with_its_type(http):
    modules = {"app.js"}
    for path in UI_DIR.glob("js/*.js"):
        modules |= set(re.findall(r"from '\./([a-z]+\.js)'", path.read_text()))
    for name in sorted(modules):
        reply = http.get(f"/ui/js/{name}")
        assert reply.status_code == 200, name
        assert reply.headers["content-type"].startswith("text/javascript")
    assert http.get("/ui/console.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/..%2F..%2Fapp.py", "/ui/js/../../app.py"])
def test_files_outside_the_console_are_not_served(http, path):
    reply = http.get(path)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] in ("not_found",)


@pytest.mark.parametrize(
    ("token", "role", "may"),
    [
        (None, "none", {"read": False, "predict": False, "admin": False}),
        (PREDICT, "predict", {"read": True, "predict": True, "admin": False}),
        (ADMIN, "admin", {"read": True, "predict": True, "admin": True}),
    ],
)
def test_whoami_says_what_a_token_may_do(http, token, role, may):
    reply = http.get("/whoami", headers=bearer(token) if token else {})
    assert reply.status_code == 200
    assert reply.json() == {
        "role": role,
        "may": may,
        "name": None if token is None else role,  # the global tokens' names
        "tasks": None,  # every task
        "tokens_set": {"admin": True, "predict": True, "scoped": 0},
    }


def test_whoami_refuses_a_wrong_token_with_the_reason(http):
    reply = http.get("/whoami", headers=bearer("not-a-token-at-all"))
    assert reply.status_code == 403
    assert "neither this server's admin nor its predict token" in reply.json()["error"]["message"]


def test_task_listing_pages_in_name_order_with_filters(http):
    every = http.get("/tasks", headers=bearer(PREDICT)).json()
    names = [t["task"] for t in every["tasks"]]
    assert names == sorted(names) and every["total"] == 10 and "next" not in every
    seen, after = [], ""
    while True:
        page = http.get(
            "/tasks", params={"limit": 3, "after": after}, headers=bearer(PREDICT)
        ).json()
        assert page["total"] == 10 and len(page["tasks"]) <= 3
        seen += [t["task"] for t in page["tasks"]]
        if "next" not in page:
            break
        after = page["next"]
    assert seen == names
    team = http.get("/tasks", params={"prefix": "team-"}, headers=bearer(PREDICT)).json()
    assert team["total"] == 5 and all(t["task"].startswith("team-") for t in team["tasks"])
    tagged = http.get("/tasks", params={"kind": "token_classification"}, headers=bearer(PREDICT))
    assert [t["task"] for t in tagged.json()["tasks"]] == [
        "team-3-token_classification",
        "token_classification",
    ]


def test_the_client_pages_through_every_task(server):
    client = Client(server.url, token=PREDICT)
    try:
        assert len(client.tasks(page_size=2)) == 10
        assert [t["task"] for t in client.tasks(prefix="team-1")] == ["team-1-regression"]
    finally:
        client.close()


def test_listing_parameters_are_checked(http):
    reply = http.get("/tasks", params={"limit": 0}, headers=bearer(PREDICT))
    assert reply.status_code == 422 and "limit" in reply.json()["error"]["message"]


def test_a_task_describes_its_thresholds_size_date_and_training(http):
    multi = http.get("/tasks/multi_label", headers=bearer(PREDICT)).json()
    assert multi["thresholds"] == [0.3, 0.5, 0.7]
    assert multi["size_bytes"] == multi["versions"][0]["size_bytes"] > 0
    assert multi["created_at"] == multi["versions"][0]["created_at"]
    assert (
        "thresholds"
        not in http.get(
            "/tasks", params={"kind": "classification"}, headers=bearer(PREDICT)
        ).json()["tasks"][0]
    )


def test_traffic_counts_requests_errors_forwards_and_busiest_tasks(http):
    for _ in range(3):
        assert (
            http.post(
                "/tasks/regression/predict",
                json={"inputs": ["a b", "c d"]},
                headers=bearer(PREDICT),
            ).status_code
            == 200
        )
    assert (
        http.post(
            "/tasks/embedding/predict", json={"inputs": ["x"]}, headers=bearer(PREDICT)
        ).status_code
        == 200
    )
    assert (
        http.post(
            "/tasks/embedding/predict", json={"inputs": []}, headers=bearer(PREDICT)
        ).status_code
        == 422
    )
    assert http.get("/stats/traffic").status_code == 401  # task names need the read token
    snap = http.get("/stats/traffic", params={"top": 2}, headers=bearer(PREDICT)).json()
    summary = snap["summary"]
    assert summary["requests"] >= 5 and summary["errors"] >= 1
    assert summary["forwards"] >= 4 and summary["rows_per_forward"] >= 1
    assert summary["p50_ms"] > 0 and summary["p95_ms"] >= summary["p50_ms"]
    assert [t["task"] for t in snap["tasks"]][0] == "regression"
    assert len(snap["series"]) == snap["window_seconds"] // snap["slot_seconds"]
    assert sum(p["requests"] for p in snap["series"]) == summary["requests"]
