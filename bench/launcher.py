"""A real `bitpatch serve` process on 127.0.0.1 with a random port: the one launcher of the
tests and the benchmarks (`design` serves an alternative engine, see bench/designs.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Starts the server as a subprocess and waits for /readyz; `url` and `client` once up."""

    def __init__(
        self,
        backbone: Path | str,
        store: Path,
        *extra: str,
        env: dict | None = None,
        dtype: str = "float32",
        design: str | None = None,
    ):
        self.port = free_port()
        self.store = store
        self.url = f"http://127.0.0.1:{self.port}"
        command = ["bench.alt_server", "--design", design] if design else ["bitpatch", "serve"]
        self.args = [
            sys.executable,
            "-m",
            *command,
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
        root = str(Path(__file__).resolve().parents[1])  # the repo, where `bench` is
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = 0.0
        self.log = store.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120) -> ServerProcess:
        """Launch and block until ready (or fail with the server's log)."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
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
