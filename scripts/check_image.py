"""Check a built bitpatch image by running it: the checks CI runs against the container.

    python scripts/check_image.py bitpatch:cpu [--build-seconds S]

Runs the container with host networking, a read-only root filesystem, a store volume and an
admin token; checks health, readiness, a demo predict, auth, an upload that survives a restart
on the same volume (run as the Kubernetes pod runs: uid/gid 10001, no capabilities; in float32
with the onnxruntime forward, its graph cached under /tmp), the uid,
and that `docker stop` ends it within 5 s, answering the requests in flight. Exits 1 on any
failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bitpatch.patches.patch_file import read_patch

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "image-check-admin-token"
UID = 10001
STOP_BOUND_S = 5.0
READY_BOUND_S = 240.0


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise CheckFailed(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


class CheckFailed(Exception):
    """One of the container checks did not hold."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    print(f"ok   {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Container:
    """One `docker run` of the image on the shared volume, removed on exit."""

    def __init__(self, image: str, volume: str, port: int, name: str, *flags: str):
        self.image, self.volume, self.port, self.name = image, volume, port, name
        self.flags = flags
        self.url = f"http://127.0.0.1:{port}"
        self.grpc_port = free_port()  # host networking: not the image's 8001, which may be taken

    def __enter__(self) -> Container:
        docker("rm", "-f", self.name, check=False)
        docker(
            "run", "-d", "--name", self.name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp",
            "-v", f"{self.volume}:/data/patches",
            "-e", f"BITPATCH_PORT={self.port}", "-e", f"BITPATCH_GRPC_PORT={self.grpc_port}",
            "-e", f"BITPATCH_ADMIN_TOKEN={TOKEN}",
            *self.flags, self.image,
        )  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            print(docker("logs", "--tail", "40", self.name, check=False), file=sys.stderr)
        docker("rm", "-f", self.name, check=False)

    def wait_ready(self) -> float:
        """Seconds from now until /healthz and /readyz both answer 200."""
        start = time.monotonic()
        while time.monotonic() - start < READY_BOUND_S:
            if docker("inspect", "-f", "{{.State.Running}}", self.name) != "true":
                raise CheckFailed(f"the container exited: {docker('logs', self.name)}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2).status_code
                if health == 200 and httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise CheckFailed(f"not ready within {READY_BOUND_S:.0f} s")

    def stop(self) -> float:
        start = time.monotonic()
        docker("stop", self.name)
        return time.monotonic() - start


def predict(http: httpx.Client, task: str, text: str) -> dict:
    reply = http.post(f"/tasks/{task}/predict", json={"inputs": [text]})
    expect(reply.status_code == 200, f"predict {task} answers 200 (got {reply.status_code})")
    return reply.json()["predictions"][0]


def renamed_demo_patch(demo: str, task: str) -> bytes:
    """The demo patch's tensors under another task name: a new task to upload."""
    patch = read_patch(ROOT / "patches" / "demo" / f"{demo}.safetensors")
    return dataclasses.replace(patch, task=task).to_bytes()


def check_first_run(box: Container) -> dict:
    figures = {"cold_start_s": round(box.wait_ready(), 1)}
    expect(True, f"/healthz and /readyz answer 200 after {figures['cold_start_s']} s")
    status = docker("exec", box.name, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    expect(uids == [str(UID)] * 4, f"PID 1 runs as uid {UID} (real, effective, saved, fs: {uids})")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=box.url, timeout=30) as http:
        label = predict(http, "sentiment", "a wonderful, moving film")["label"]
        expect(label == "positive", f"the demo sentiment patch says positive (got {label})")
        patch = renamed_demo_patch("sentiment", "uploaded")
        denied = http.put("/tasks/uploaded/patch", content=patch)
        expect(denied.status_code == 401, f"an upload without the token answers 401 ({denied})")
        listing = http.get("/tasks").status_code
        expect(listing == 401, f"reading tasks without the token answers 401 ({listing})")
        upload = http.put("/tasks/uploaded/patch", content=patch, headers=auth)
        expect(upload.status_code == 201, f"an upload with the token answers 201 ({upload.text})")
        label = predict(http, "uploaded", "dull and far too long")["label"]
        expect(label == "negative", f"the uploaded task is served at once (got {label})")
    check_protocols(box)
    figures["healthcheck_s"] = round(wait_healthy(box), 1)
    expect(True, f"Docker's HEALTHCHECK reports healthy after {figures['healthcheck_s']} s")
    return figures


def check_protocols(box: Container) -> None:
    """The demo sentiment task through tritonclient over v2 REST and gRPC."""
    import numpy as np
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    for name, module, address in (
        ("v2 REST", triton_http, box.url.removeprefix("http://")),
        ("v2 gRPC", triton_grpc, f"127.0.0.1:{box.grpc_port}"),
    ):
        with module.InferenceServerClient(address) as client:
            text = module.InferInput("text", [1], "BYTES")
            text.set_data_from_numpy(np.array([b"a wonderful, moving film"], dtype=object))
            label = client.infer("sentiment", [text]).as_numpy("label")[0].decode()
        expect(label == "positive", f"{name} (tritonclient) answers the demo task ({label})")


def wait_healthy(box: Container) -> float:
    start = time.monotonic()
    while time.monotonic() - start < 90:
        state = docker("inspect", "-f", "{{.State.Health.Status}}", box.name)
        if state == "healthy":
            return time.monotonic() - start
        if state != "starting":
            raise CheckFailed(f"Docker's HEALTHCHECK reports {state}")
        time.sleep(1)
    raise CheckFailed("HEALTHCHECK not healthy within 90 s")


def check_stop_drains(box: Container) -> float:
    """`docker stop` while requests are in flight: each still gets its answer."""
    text = " ".join(["a long and winding review of a film that goes on"] * 30)
    body = {"inputs": [text] * 64}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        flying = [
            pool.submit(httpx.post, f"{box.url}/tasks/sentiment/predict", json=body, timeout=60)
            for _ in range(2)
        ]
        time.sleep(0.3)
        in_flight = sum(not f.done() for f in flying)
        seconds = box.stop()
        codes = [f.result().status_code for f in flying]
    expect(codes == [200] * 2, f"requests in flight at SIGTERM ({in_flight} of 2) answer 200")
    check_exit_code(box)
    expect(True, f"docker stop with those in flight took {seconds:.2f} s")
    return seconds


def check_stop(box: Container) -> float:
    seconds = box.stop()
    expect(seconds < STOP_BOUND_S, f"docker stop ends the idle server in {seconds:.2f} s (< 5 s)")
    check_exit_code(box)
    return seconds


def check_exit_code(box: Container) -> None:
    code = docker("inspect", "-f", "{{.State.ExitCode}}", box.name)
    expect(code == "0", f"the server exits 0 on SIGTERM, not killed (got {code})")


def check_restart(box: Container) -> None:
    box.wait_ready()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=box.url, timeout=30) as http:
        tasks = {t["task"] for t in http.get("/tasks", headers=auth).json()["tasks"]}
        expect(
            "uploaded" in tasks,
            f"after a restart on the same volume the upload is listed ({tasks})",
        )
        label = predict(http, "uploaded", "a wonderful, moving film")["label"]
        expect(label == "positive", f"and served (got {label})")
        info = http.get("/info", headers=auth).json()
        expect(
            (info["dtype"], info["forward"]) == ("float32", "onnxruntime"),
            f"the image runs the onnxruntime forward in float32, its graph cached under the "
            f"read-only root's /tmp (got {info['dtype']}, {info['forward']})",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="the image to check, e.g. bitpatch:cpu")
    parser.add_argument("--build-seconds", type=float, help="the build's time, for the report")
    args = parser.parse_args()
    volume = f"bitpatch-check-{int(time.time())}"
    port = free_port()
    docker("volume", "create", volume)
    try:
        with Container(args.image, volume, port, "bitpatch-check-1") as box:
            figures = check_first_run(box)
            figures["stop_with_requests_in_flight_s"] = round(check_stop_drains(box), 2)
        # the second run as the Kubernetes manifests run the pod (docker/k8s/base)
        pod_like = ("--user", f"{UID}:{UID}", "--cap-drop", "ALL")
        pod_like += ("--security-opt", "no-new-privileges", "-e", "BITPATCH_DTYPE=float32")
        pod_like += ("-e", "BITPATCH_FORWARD=onnxruntime")  # auto picks it on AMD CPUs only
        with Container(args.image, volume, port, "bitpatch-check-2", *pod_like) as box:
            check_restart(box)
            figures["stop_idle_s"] = round(check_stop(box), 2)
    except CheckFailed as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        return 1
    finally:
        docker("volume", "rm", "-f", volume, check=False)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", args.image))
    figures["image_mb"] = round(size / 1e6)
    if args.build_seconds is not None:
        figures["build_s"] = round(args.build_seconds)
    print("image check passed:", json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
