"""The server the protocol tests share (v2 REST, v2 gRPC, OpenAI, native) and its tasks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import httpx

from bitpatch.testing import ServerProcess, free_port

from tiny import kind_patch, make_model, random_patch

ADMIN = "protocol-admin-token"
PREDICT = "protocol-predict-token"
AUTH = {"Authorization": f"Bearer {PREDICT}"}


def auth() -> dict[str, str]:
    """A fresh copy of the predict token header (tritonclient adds its own headers into the
    dict it is given)."""
    return dict(AUTH)


def grpc_auth() -> dict[str, str]:
    """The predict token as gRPC metadata (keys are lower case there)."""
    return {"authorization": f"Bearer {PREDICT}"}


TEXTS = ["the cat sat on the mat", "a very funny film and a sad story", "short"]
MIXED_TASKS = [f"mix{i:02d}" for i in range(16)]


@dataclass
class ProtocolServer:
    """A running server: its HTTP url, gRPC address and native HTTP client."""

    process: ServerProcess
    grpc_address: str
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def address(self) -> str:
        """host:port as tritonclient.http takes it."""
        return self.url.removeprefix("http://")

    def native(self, task: str, inputs: list, version: int | None = None) -> list[dict]:
        """The native predict answer: the reference every protocol must equal."""
        body = {"inputs": inputs} | ({"version": version} if version else {})
        reply = self.http.post(f"/tasks/{task}/predict", json=body, headers=auth())
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"]


def patches() -> dict:
    """Every task the server holds: one per kind, a second `cls` version, 16 mixed ones."""
    model = make_model("bert")[0]
    made = {
        "cls": [kind_patch(model, "classification", "cls", seed=1)],
        "reg": [kind_patch(model, "regression", "reg", seed=2)],
        "multi": [kind_patch(model, "multi_label", "multi", seed=3)],
        "tokens": [kind_patch(model, "token_classification", "tokens", seed=4)],
        "embed": [kind_patch(model, "embedding", "embed", seed=5)],
    }
    made["cls"].append(kind_patch(model, "classification", "cls", seed=6))
    for i, task in enumerate(MIXED_TASKS):
        made[task] = [random_patch(model, task, 2, "cls", seed=100 + i)]
    return made


@contextlib.contextmanager
def start_protocol_server(backbone, folder):
    """Start the server, upload every patch, yield a ProtocolServer."""
    grpc_port = free_port()
    args = (
        "--no-demo-patches",
        "--admin-token",
        ADMIN,
        "--predict-token",
        PREDICT,
        "--grpc-port",
        str(grpc_port),
        "--max-inputs",
        "8",
        "--max-wait-ms",
        "10",
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with (
        ServerProcess(backbone, folder / "store", *args) as process,
        httpx.Client(base_url=process.url, timeout=30) as http,
    ):
        for task, versions in patches().items():
            for patch in versions:
                reply = http.put(f"/tasks/{task}/patch", content=patch.to_bytes(), headers=admin)
                assert reply.status_code == 201, reply.text
        yield ProtocolServer(process, f"127.0.0.1:{grpc_port}", http)
