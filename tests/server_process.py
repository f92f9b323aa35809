"""A real `bitpatch serve` process on 127.0.0.1 with a random port, for API tests."""

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

    def __init__(self, backbone: Path | str, store: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.store = store
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "bitpatch",
            "serve",
            "--backbone",
            str(backbone),
            "--store",
            str(store),
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-wait-ms",
            "2",
            *extra,
        ]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = store.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120) -> ServerProcess:
        """Launch and block until ready (or fail with the server's log)."""
        self._handle = open(self.log, "w")  # noqa: SIM115 - kept open for the process' life
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self._handle, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.logs()}")

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
