"""A small Python client for a bitpatch server: predict, push, list, activate, delete, and a
task's rollout (canary, shadow, guard, promote, evaluate)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx


def admin_token(given: str | None) -> str | None:
    """A token given on the command line, else $BITPATCH_ADMIN_TOKEN."""
    return given or os.environ.get("BITPATCH_ADMIN_TOKEN") or None


class BitpatchError(RuntimeError):
    """An error answer from the server (status, code, message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    """Talks to one server; `token` is sent as a Bearer token on every call."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": reply.text}
            raise BitpatchError(reply.status_code, error["code"], error["message"])
        return reply.json() if reply.content else {}

    def predict(self, task: str, inputs: list, version: int | None = None) -> dict:
        """POST /tasks/{task}/predict."""
        body = {"inputs": inputs} | ({"version": version} if version is not None else {})
        return self._call("POST", f"/tasks/{task}/predict", json=body)

    def push(
        self, patch: str | Path | bytes, task: str | None = None, activate: bool = True
    ) -> dict:
        """PUT /tasks/{task}/patch with the file's bytes (task defaults to the patch's own);
        `activate=False` stores a candidate for a rollout."""
        data = patch if isinstance(patch, bytes) else Path(patch).read_bytes()
        if task is None:
            from .bulk_push import task_of

            task = task_of(data)
        return self._call(
            "PUT",
            f"/tasks/{task}/patch",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            params={} if activate else {"activate": "false"},
        )

    def tasks(self, prefix: str = "", kind: str = "", page_size: int = 1000) -> list[dict]:
        """GET /tasks, every page (optionally only names with `prefix`, tasks of `kind`)."""
        found, after = [], ""
        while True:
            params = {"limit": page_size, "after": after, "prefix": prefix, "kind": kind}
            page = self._call("GET", "/tasks", params=params)
            found += page["tasks"]
            after = page.get("next")
            if not after:
                return found

    def task(self, task: str) -> dict:
        """GET /tasks/{task}."""
        return self._call("GET", f"/tasks/{task}")

    def activate(self, task: str, version: int) -> dict:
        """POST /tasks/{task}/versions/{v}/activate."""
        return self._call("POST", f"/tasks/{task}/versions/{version}/activate")

    def delete(self, task: str, version: int | None = None) -> dict:
        """DELETE a version, or the whole task."""
        path = f"/tasks/{task}" + (f"/versions/{version}" if version is not None else "")
        return self._call("DELETE", path)

    def download(self, task: str, version: int) -> bytes:
        """GET /tasks/{task}/versions/{v}/patch."""
        reply = self.http.get(f"/tasks/{task}/versions/{version}/patch")
        if reply.status_code >= 400:
            error = reply.json()["error"]
            raise BitpatchError(reply.status_code, error["code"], error["message"])
        return reply.content

    def rollout(self, task: str) -> dict:
        """GET /tasks/{task}/rollout: the rollout and the replica's figures."""
        return self._call("GET", f"/tasks/{task}/rollout")

    def set_rollout(self, task: str, rollout: dict) -> dict:
        """PUT /tasks/{task}/rollout with {"canary"?, "shadow"?, "guard"?}."""
        return self._call("PUT", f"/tasks/{task}/rollout", json=rollout)

    def end_rollout(self, task: str) -> dict:
        """DELETE /tasks/{task}/rollout."""
        return self._call("DELETE", f"/tasks/{task}/rollout")

    def promote(self, task: str) -> dict:
        """POST /tasks/{task}/rollout/promote."""
        return self._call("POST", f"/tasks/{task}/rollout/promote")

    def evaluate(self, task: str, inputs: list, labels: list) -> dict:
        """POST /tasks/{task}/evaluate: this call's figures per version."""
        return self._call(
            "POST", f"/tasks/{task}/evaluate", json={"inputs": inputs, "labels": labels}
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
