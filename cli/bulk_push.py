"""Pushing many patches at once: files and folders expanded to patch files, uploaded by N
concurrent workers with a progress bar, transient refusals (429, 503, a dropped connection)
retried, and a summary of what was created, unchanged and refused (with each reason)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RETRIES = 4  # tries of one upload refused for a transient reason
RETRY_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class Pushed:
    """One file's outcome: created, unchanged or refused (with the server's code and reason)."""

    file: str
    task: str | None
    outcome: str
    version: int | None = None
    status: int | None = None
    code: str = ""
    message: str = ""


@dataclass
class Summary:
    """Counts by outcome, every refusal, and the push's rate."""

    created: int = 0
    unchanged: int = 0
    refused: list[Pushed] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, pushed: Pushed) -> None:
        """Count one outcome."""
        if pushed.outcome == "refused":
            self.refused.append(pushed)
        elif pushed.outcome == "created":
            self.created += 1
        else:
            self.unchanged += 1

    def as_json(self) -> dict:
        """The summary `bitpatch push` prints."""
        total = self.created + self.unchanged + len(self.refused)
        return {
            "files": total,
            "created": self.created,
            "unchanged": self.unchanged,
            "refused": len(self.refused),
            "seconds": round(self.seconds, 3),
            "per_second": round(total / self.seconds, 1) if self.seconds else None,
            "refusals": [
                {k: v for k, v in vars(p).items() if k != "outcome" and v not in (None, "")}
                for p in self.refused
            ],
        }


def patch_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders as every *.safetensors under them (sorted); ValueError for a
    path that does not exist."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob("*.safetensors"))
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return found


def task_of(data: bytes) -> str:
    """The task a patch names in its metadata (ValueError when it names none)."""
    from bitpatch.patches.patch_file import PatchError, patch_metadata

    try:
        task = patch_metadata(data).get("task")
    except PatchError as err:
        raise ValueError(str(err)) from None
    if not task:
        raise ValueError("the patch's metadata names no task")
    return task


class BulkPusher:
    """Uploads files over one connection pool of `jobs` connections."""

    def __init__(self, url: str, token: str | None, jobs: int, activate: bool = True):
        headers = {"Content-Type": "application/octet-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs)
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, limits=limits,
                                 timeout=120)  # fmt: skip
        self.jobs, self.activate = jobs, activate

    def push_all(self, files: list[Path], progress=None) -> Summary:
        """Push every file; `progress` (a tqdm bar or None) advances per file."""
        summary, started = Summary(), time.perf_counter()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="bp-push") as pool:
            for done in as_completed([pool.submit(self.push_one, f) for f in files]):
                summary.add(done.result())
                if progress is not None:
                    progress.update(1)
        summary.seconds = time.perf_counter() - started
        return summary

    def push_one(self, file: Path) -> Pushed:
        """One file: read, name its task, upload (retrying transient refusals)."""
        try:
            data = file.read_bytes()
            task = task_of(data)
        except (OSError, ValueError) as err:
            return Pushed(str(file), None, "refused", code="unreadable", message=str(err))
        params = {} if self.activate else {"activate": "false"}
        reply, error = None, ""
        for attempt in range(RETRIES):
            try:
                reply = self.http.put(f"/tasks/{task}/patch", content=data, params=params)
            except httpx.TransportError as err:
                reply, error = None, f"{type(err).__name__}: {err}"
            if reply is not None and reply.status_code not in RETRY_STATUSES:
                break
            if attempt + 1 < RETRIES:
                time.sleep(retry_after(reply, attempt))
        return outcome_of(str(file), task, reply, error)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def retry_after(reply: httpx.Response | None, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After, else exponential backoff."""
    header = reply.headers.get("retry-after", "") if reply is not None else ""
    if header.replace(".", "", 1).isdigit():
        return min(float(header), 30.0)
    return 0.25 * 2**attempt


def outcome_of(file: str, task: str, reply: httpx.Response | None, error: str) -> Pushed:
    """A file's outcome from the last answer (None: the server could not be reached)."""
    if reply is None:
        return Pushed(file, task, "refused", code="unreachable", message=error)
    if reply.status_code in (200, 201):
        outcome = "created" if reply.status_code == 201 else "unchanged"
        return Pushed(file, task, outcome, version=reply.json().get("version"))
    try:
        body = reply.json()["error"]
        code, message = body["code"], body["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", reply.text[:500]
    return Pushed(file, task, "refused", status=reply.status_code, code=code, message=message)
