"""Docker, compose, Prometheus and Grafana files: parsed, checked against the server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from bitpatch.testing import ServerProcess, free_port

from tiny import make_model, random_patch

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def test_compose_prometheus_and_grafana_parse():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"bitpatch", "prometheus", "grafana"}
    assert "patches:/data/patches" in services["bitpatch"]["volumes"]
    assert "8000:8000" in services["bitpatch"]["ports"]
    assert "BITPATCH_ADMIN_TOKEN" in services["bitpatch"]["environment"]
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["bitpatch:8000"]
    provisioning = DOCKER / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "bitpatch.yaml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "bitpatch.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 8
    return {m for e in exprs for m in re.findall(r"bitpatch_[a-z_]+", e)}


def test_every_dashboard_metric_is_served(tiny_bert_dir, tmp_path):
    names = dashboard_metrics()
    model = make_model("bert")[0]
    with (
        ServerProcess(tiny_bert_dir, tmp_path / "store", "--no-demo-patches") as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        for seed in (1, 2):
            http.put("/tasks/d/patch", content=random_patch(model, "d", 2, "cls", seed).to_bytes())
        http.post("/tasks/d/versions/1/activate")
        http.put("/tasks/d/patch", content=b"not a patch")
        http.post("/tasks/d/predict", json={"inputs": ["a"]})
        http.post("/tasks/zz/predict", json={"inputs": ["a"]})
        samples = {
            line.split("{")[0].split(" ")[0]
            for line in http.get("/metrics").text.splitlines()
            if not line.startswith("#")
        }
    assert names and names <= samples, names - samples


def test_dockerfile_matches_the_readme():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needle in (
        "EXPOSE 8000",
        'VOLUME ["/data/patches"]',
        "/healthz",
        "HEALTHCHECK",
        "USER 10001",
        "BITPATCH_HOST=0.0.0.0",
        "ARG BASE_IMAGE=nvidia/cuda:",
        "ARG TORCH_INDEX_URL=",
    ):
        assert needle in dockerfile, needle
    readme = (ROOT / "README.md").read_text()
    assert "docker run --gpus all -p 8000:8000 -v patches:/data/patches" in readme
    assert "scripts/build_image.sh --variant cpu" in readme
    assert "# syntax=" not in dockerfile  # it would pull a frontend image
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.slow
def test_entrypoint_serves_demo_patches(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BITPATCH_STORE": str(tmp_path / "patches"),
        "BITPATCH_PORT": str(port),
        "BITPATCH_HOST": "127.0.0.1",
        "BITPATCH_ADMIN_TOKEN": "entrypoint-token",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        ["sh", str(DOCKER / "entrypoint.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/tasks").status_code == 401  # reads need the token too
        auth = {"Authorization": "Bearer entrypoint-token"}
        tasks = {t["task"] for t in httpx.get(f"{url}/tasks", headers=auth).json()["tasks"]}
        assert {"sentiment", "paraphrase", "similarity"} <= tasks
        reply = httpx.post(
            f"{url}/tasks/sentiment/predict",
            json={"inputs": ["a wonderful, moving film", "dull and boring"]},
        )
        labels = [p["label"] for p in reply.json()["predictions"]]
        assert labels == ["positive", "negative"]
        assert httpx.put(f"{url}/tasks/x/patch", content=b"x").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
