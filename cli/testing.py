"""Real processes for tests and benchmarks: a `bitpatch serve` on 127.0.0.1 with a random port
(ServerProcess), several started at once, and moto's S3 server for stores on S3."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Starts the server as a subprocess and waits for /readyz; its `url` once up."""

    def __init__(
        self,
        backbone: Path | str,
        store: Path | str,
        *extra: str,
        env: dict | None = None,
        dtype: str = "float32",
        log_dir: Path | None = None,
        entry: tuple[str, ...] = ("bitpatch", "serve"),
    ):
        self.port = free_port()
        self.store = store
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            *entry,  # the module run with -m and its first arguments
            "--backbone",
            str(backbone),
            "--store",
            str(store),
            "--port",
            str(self.port),
            "--dtype",
            dtype,
            *extra,
        ]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = 0.0
        self.log = (log_dir or Path(store).parent) / f"server-{self.port}.log"

    def start(self, timeout: float = 120) -> ServerProcess:
        """Launch and block until ready (or fail with the server's log)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.log, "w")  # noqa: SIM115 - kept open for the process' life
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self._handle, stderr=subprocess.STDOUT
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.logs()}")

    def rss_mb(self) -> float:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def logs(self) -> str:
        """What the server printed."""
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and wait for it; returns its exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self._handle.close()
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL, no cleanup."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def started_together(servers: list[ServerProcess], timeout: float = 300):
    """Start every server at once (as a rollout would), yield them, stop them all."""
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            yield list(pool.map(lambda s: s.start(timeout), servers))
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()


class MotoServer:
    """moto's standalone S3 server on 127.0.0.1 (data in memory only), for stores on S3."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.log = folder / "moto.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> MotoServer:
        """Launch and wait until it answers."""
        binary = Path(sys.executable).parent / "moto_server"
        self._handle = open(self.log, "w")  # noqa: SIM115 - kept open for the process' life
        self.proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                httpx.get(self.endpoint, timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"moto server not up in {timeout}s: {self.log.read_text()}")

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(max_pool_connections=32),
        )

    def bucket_url(self, name: str) -> str:
        """Create a bucket named after `name` and return s3://bucket/patches."""
        bucket = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50] or "bucket"
        bucket = f"b-{bucket}-{free_port()}"
        self.client().create_bucket(Bucket=bucket)
        return f"s3://{bucket}/patches"

    def freeze(self) -> None:
        """SIGSTOP: the server stops answering (connections hang)."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(30)
        self._handle.close()
