"""bitpatch on Ray Serve: `serve run` of docker/ray/serve.yaml on a local Ray instance."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from bitpatch.testing import free_port

from tiny import make_model, random_patch

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'bitpatch[ray]'")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ray-serve-admin-token"
BOUND = 10.0  # seconds a change may take to reach every replica (sync interval 1 s)
START_BOUND = 300.0


def ray_config(tmp_path: Path, port: int, store: Path, backbone: Path) -> Path:
    """docker/ray/serve.yaml with this test's port, store and tiny backbone."""
    config = yaml.safe_load((ROOT / "docker" / "ray" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"]["num_cpus"] = 0.5  # two replicas on a 2-core host
    app["runtime_env"]["env_vars"].update(
        BITPATCH_STORE=str(store),
        BITPATCH_BACKBONE=str(backbone),
        BITPATCH_ADMIN_TOKEN=TOKEN,
        BITPATCH_DEMO_PATCHES="false",
    )
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def ray_serve(tmp_path, tiny_bert_dir):
    """`serve run` in its own process group; yields the proxy's URL once 2 replicas answer."""
    port = free_port()
    config = ray_config(tmp_path, port, tmp_path / "store", tiny_bert_dir)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local instance
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    log = (tmp_path / "serve.log").open("w")
    serve = Path(sys.executable).with_name("serve")
    proc = subprocess.Popen(
        [str(serve), "run", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        replicas = wait_for_replicas(url, proc, tmp_path / "serve.log")
        yield url, replicas
    finally:
        stop(proc)
        log.close()


def wait_for_replicas(url: str, proc: subprocess.Popen, log: Path) -> set[str]:
    """The replica ids behind the proxy, once two different ones answered /readyz."""
    seen: set[str] = set()
    deadline = time.monotonic() + START_BOUND
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            reply = httpx.get(f"{url}/readyz", timeout=5)
            if reply.status_code == 200:
                seen.add(reply.headers["x-bitpatch-replica"])
                if len(seen) == 2:
                    return seen
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"2 replicas not ready in {START_BOUND:.0f} s: {log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops `serve run`; then the whole group, whatever is left of it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def answers_by_replica(url: str, task: str, text: str, tries: int = 40) -> dict:
    """Predicts through the proxy until each replica answered once (or the tries run out)."""
    by_replica: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(tries):
            reply = http.post(f"/tasks/{task}/predict", json={"inputs": [text]})
            by_replica.setdefault(reply.headers["x-bitpatch-replica"], reply)
    return by_replica


@pytest.mark.slow
def test_two_replicas_behind_the_proxy_share_one_store(ray_serve):
    url, replicas = ray_serve
    model = make_model("bert")[0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.put("/tasks/t/patch", content=b"x").status_code == 401
        first = random_patch(model, "t", 3, "cls", seed=1).to_bytes()
        reply = http.put("/tasks/t/patch", content=first, headers=auth)
        assert reply.status_code == 201, reply.text
        uploaded_at = time.monotonic()
        uploader = reply.headers["x-bitpatch-replica"]
        assert uploader in replicas
        infos = {http.get("/info").json()["replica"] for _ in range(30)}
        assert infos == replicas  # /info names the replica, as the header does
    while True:  # the replica that did not take the upload learns it from the store
        answers = answers_by_replica(url, "t", "a shared store")
        served = {r for r, reply in answers.items() if reply.status_code == 200}
        if served == replicas:
            break
        assert time.monotonic() - uploaded_at < BOUND, {r: a.text for r, a in answers.items()}
        time.sleep(0.2)
    predictions = [a.json()["predictions"] for a in answers.values()]
    assert predictions[0] == predictions[1]  # one patch, one answer, whichever replica
    with httpx.Client(base_url=url, timeout=30) as http:  # a new version reaches both too
        second = random_patch(model, "t", 3, "cls", seed=2).to_bytes()
        assert http.put("/tasks/t/patch", content=second, headers=auth).status_code == 201
    changed_at = time.monotonic()
    while True:
        versions = {r: a.json()["version"] for r, a in answers_by_replica(url, "t", "x").items()}
        if set(versions) == replicas and set(versions.values()) == {2}:
            break
        assert time.monotonic() - changed_at < BOUND, versions
        time.sleep(0.2)


def test_ray_options_are_checked():
    from bitpatch.server.ray_serve import RayOptions

    scaled = RayOptions(min_replicas=1, max_replicas=4).deployment_options()
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 32,
    }
    assert "num_replicas" not in scaled
    from_cli = RayOptions.model_validate({"num_replicas": "3"})  # `serve run ... key=value`
    assert from_cli.deployment_options()["num_replicas"] == 3
    with pytest.raises(ValueError, match="both min_replicas and max_replicas"):
        RayOptions(max_replicas=2)
    with pytest.raises(ValueError, match="above max_replicas"):
        RayOptions(min_replicas=3, max_replicas=2)
