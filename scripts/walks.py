"""The files a request walks through: serves a checkout of bitpatch under a profiler, sends one
native predict, one v2 gRPC ModelInfer and one patch upload, and reports for each the product
files whose functions ran and the hops between files, in call order.

    python scripts/walks.py [--root CHECKOUT] [--out walks.json]

--root may be another checkout of the project (a `git worktree` of an older commit): the
installed editable `bitpatch` is pointed at it, so two commits are compared with one script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PRODUCT = ("cli/", "server/", "patches/")
QUIET = ("server/core/follow.py",)  # the store follower: a background loop
QUIET_CALLS = ("on_collection",)  # the garbage collector's timing callback


def point_package_at(root: Path) -> None:
    """Make `import bitpatch` load the checkout at root (the editable install's mapping)."""
    import importlib

    finder = importlib.import_module("__editable___bitpatch_0_1_0_finder")
    for package, folder in list(finder.MAPPING.items()):
        finder.MAPPING[package] = str(root / Path(folder).name)


def serve_traced(root: Path, dump: Path, argv: list[str]) -> None:
    """Run `bitpatch serve argv` recording product calls between SIGUSR1 and SIGUSR2."""
    point_package_at(root)
    prefix = str(root) + os.sep
    events: list[tuple[int, int, str, str]] = []
    recording = threading.Event()

    def profile(frame, event, arg):
        if event != "call" or not recording.is_set():
            return
        path = frame.f_code.co_filename
        if path.startswith(prefix):
            rel = path[len(prefix) :]
            name = frame.f_code.co_name
            if rel.startswith(PRODUCT) and rel not in QUIET and name not in QUIET_CALLS:
                events.append((time.perf_counter_ns(), threading.get_ident(), rel, name))

    def start(*_):
        events.clear()
        recording.set()

    def stop(*_):
        recording.clear()
        dump.write_text(json.dumps(sorted(events)))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    threading.setprofile(profile)
    sys.setprofile(profile)
    from bitpatch.cli import main

    sys.argv = ["bitpatch", *argv]
    main()


def walk_of(events: list) -> dict:
    """The walk through every product file, and through server/ alone (the request path)."""
    everything = [rel for _, _, rel, _ in events]
    server = [rel for rel in everything if rel.startswith("server/")]
    calls = [(rel, name) for _, _, rel, name in events if rel.startswith("server/")]
    steps = [
        f"{rel}:{name}" for i, (rel, name) in enumerate(calls) if i == 0 or calls[i - 1][0] != rel
    ]
    walk = {"product": files_and_hops(everything), "server": files_and_hops(server)}
    walk["server"]["steps"] = steps  # the call entering each file, in order
    return walk


def files_and_hops(sequence: list[str]) -> dict:
    """Files in first-call order, and the file-to-file hops of the call sequence."""
    files = list(dict.fromkeys(sequence))
    hops = sum(1 for a, b in zip(sequence, sequence[1:], strict=False) if a != b)
    return {"files": len(files), "hops": hops, "order": files}


class TracedServer:
    """A traced `bitpatch serve` subprocess on the default backbone's demo store."""

    def __init__(self, root: Path, work: Path):
        self.dump = work / "events.json"
        self.port, self.grpc_port = free_port(), free_port()
        args = [
            "serve", "--store", str(work / "store"), "--port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--dtype", "float32", "--forward", "packed",
            "--sync-interval", "60",
        ]  # fmt: skip
        command = [sys.executable, __file__, "--serve", str(root), str(self.dump), *args]
        self.log = open(work / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(self.url, self.proc)

    def traced(self, call) -> dict:
        """The walk of one call, after the same call once untraced (warm-up)."""
        call()
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        call()
        time.sleep(0.3)
        self.dump.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        while not self.dump.exists():
            time.sleep(0.05)
        time.sleep(0.2)
        return walk_of(json.loads(self.dump.read_text()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    """Poll /readyz until 200 (or the process dies)."""
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server was not ready in 120 s")


def measure(root: Path) -> dict:
    """The three walks on one traced server."""
    import tritonclient.grpc as grpcclient

    with tempfile.TemporaryDirectory() as tmp:
        server = TracedServer(root, Path(tmp))
        try:
            client = httpx.Client(base_url=server.url, timeout=30)
            triton = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            source = next((Path(tmp) / "store").rglob("*.safetensors")).read_bytes()
            uploads = iter(range(100))

            def predict():
                body = {"inputs": ["a fine film"]}
                client.post("/tasks/sentiment/predict", json=body).raise_for_status()

            def grpc_infer():
                tensor = grpcclient.InferInput("text", [1], "BYTES")
                import numpy as np

                tensor.set_data_from_numpy(np.array([b"a fine film"], dtype=object))
                triton.infer("sentiment", [tensor])

            def upload():
                task = f"upload-{next(uploads)}"
                data = patch_for(source, task)
                client.put(f"/tasks/{task}/patch", content=data).raise_for_status()

            return {
                "predict": server.traced(predict),
                "grpc_infer": server.traced(grpc_infer),
                "upload": server.traced(upload),
            }
        finally:
            server.stop()


def patch_for(data: bytes, task: str) -> bytes:
    """A demo patch renamed to `task`, a fresh version's bytes."""
    from bitpatch.patches.patch_file import decode_patch

    patch = decode_patch(data)
    patch.task = task
    return patch.to_bytes()


def main() -> None:
    """Measure and print the walks."""
    if sys.argv[1:2] == ["--serve"]:
        serve_traced(Path(sys.argv[2]).resolve(), Path(sys.argv[3]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                        help="the checkout to measure (default: this one)")  # fmt: skip
    parser.add_argument("--out", help="write the walks as JSON here")
    args = parser.parse_args()
    walks = measure(Path(args.root).resolve())
    for name, walk in walks.items():
        product, server = walk["product"], walk["server"]
        print(
            f"{name}: server/ {server['files']} files, {server['hops']} hops; "
            f"all product code {product['files']} files, {product['hops']} hops"
        )
        for rel in server["order"]:
            print(f"    {rel}")
    if args.out:
        Path(args.out).write_text(json.dumps(walks, indent=2) + "\n")


if __name__ == "__main__":
    main()
