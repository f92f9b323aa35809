"""The S3 backend of the patch store: any S3-compatible object store (AWS S3, MinIO, Ceph, R2).

Keys under `s3://BUCKET/PREFIX/`: `<task>/v<N>.safetensors` (immutable, created with
`If-None-Match: *`, so two writers never get one number), `<task>/task.json` (the pointer,
moved by compare-and-swap with `If-Match` on its ETag), `<task>/sha256/<hex>` (which version
holds those bytes) and `_changes.json` (the change log, also moved by compare-and-swap; idle
processes read it with a conditional GET). Endpoint and credentials come from the standard AWS
variables or configuration; every call has bounded timeouts.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ...patches.patch_file import sha256_bytes as digest_of
from ..errors import InvalidTaskName, StoreUnavailable, UnknownVersion
from .base import (
    Changes,
    PatchStore,
    TaskRecord,
    log_append,
    log_changes,
    new_log,
    outdated_snapshots,
    pointer_rollout,
    valid_task_name,
    with_active,
    with_rollout,
)

log = logging.getLogger(__name__)
TIMEOUTS = Config(
    connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"}
)
CAS_TRIES = 50  # compare-and-swap attempts before a write gives up under contention
CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class S3Store(PatchStore):
    """Patch objects under one bucket and prefix."""

    def __init__(self, url: str):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"--store {url!r}: an S3 store is s3://BUCKET/PREFIX")
        self.bucket, prefix = parsed.netloc, parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.s3 = boto3.client("s3", config=TIMEOUTS)
        self._check_bucket()

    def _check_bucket(self) -> None:
        """Fail at start, clearly, on a missing bucket, bad credentials or no endpoint."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            code = _code(err)
            what = {
                "404": "does not exist",
                "NoSuchBucket": "does not exist",
                "403": "is not readable with these credentials",
            }.get(code, f"answered {code}")
            raise ValueError(
                f"the S3 bucket {self.bucket!r} {what}; check AWS_ENDPOINT_URL, "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket name"
            ) from None
        except BotoCoreError as err:
            raise ValueError(f"cannot reach the S3 store {self.url}: {err}") from None

    # ---- plumbing -------------------------------------------------------------------------
    def _key(self, task: str, name: str) -> str:
        if not valid_task_name(task):
            raise InvalidTaskName(f"invalid task name {task!r}")
        return f"{self.prefix}{task}/{name}"

    def _call(self, method: str, **kwargs):
        """One S3 call; network failures become StoreUnavailable."""
        try:
            return getattr(self.s3, method)(Bucket=self.bucket, **kwargs)
        except BotoCoreError as err:
            raise StoreUnavailable(
                f"the patch store {self.url} is unreachable ({type(err).__name__}); "
                "predictions go on with the patches already loaded; retry the write shortly"
            ) from None

    def _get(self, key: str, **kwargs) -> tuple[bytes, str] | None:
        """(body, ETag) of an object, or None when it does not exist."""
        try:
            reply = self._call("get_object", Key=key, **kwargs)
        except ClientError as err:
            if _code(err) in ("NoSuchKey", "404"):
                return None
            raise
        return reply["Body"].read(), reply["ETag"]

    def _create(self, key: str, body: bytes) -> bool:
        """Write `key` only if absent; False if it exists."""
        try:
            self._call("put_object", Key=key, Body=body, IfNoneMatch="*")
        except ClientError as err:
            if _code(err) in CONFLICT:
                return False
            raise
        return True

    def _swap(self, key: str, change) -> dict:
        """Read-modify-write a JSON object by compare-and-swap on its ETag; the new value."""
        for _ in range(CAS_TRIES):
            found = self._get(key)
            value = change(json.loads(found[0]) if found else None)
            condition = {"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}
            try:
                self._call("put_object", Key=key, Body=json.dumps(value).encode(), **condition)
                return value
            except ClientError as err:
                if _code(err) not in CONFLICT:
                    raise
        raise StoreUnavailable(f"too many concurrent writers on {key}; retry shortly")

    def _keys(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            reply = self._call("list_objects_v2", Prefix=prefix, **extra)
            keys += [item["Key"] for item in reply.get("Contents", [])]
            token = reply.get("NextContinuationToken")
            if not token:
                return keys

    # ---- the store ------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Task prefixes present."""
        names, token = set(), None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            reply = self._call("list_objects_v2", Prefix=self.prefix, Delimiter="/", **extra)
            for common in reply.get("CommonPrefixes", []):
                name = common["Prefix"][len(self.prefix) :].rstrip("/")
                if valid_task_name(name):
                    names.add(name)
            token = reply.get("NextContinuationToken")
            if not token:
                return sorted(names)

    def record(self, task: str) -> TaskRecord | None:
        """Versions listed and the pointer's active version."""
        versions = []
        for key in self._keys(self._key(task, "v")):
            name = key.rsplit("/", 1)[1]
            if name.startswith("v") and name.endswith(".safetensors") and name[1:-12].isdigit():
                versions.append(int(name[1:-12]))
        if not versions:
            return None
        pointer = self._pointer(task)
        active = pointer.get("active")
        active = active if active in versions else None
        return TaskRecord(task, sorted(versions), active, pointer_rollout(pointer))

    def _pointer(self, task: str) -> dict:
        found = self._get(self._key(task, "task.json"))
        try:
            value = json.loads(found[0]) if found else {}
        except ValueError:
            log.error("event=store_pointer_unreadable task=%s", task)
            return {}
        return value if isinstance(value, dict) else {}

    def read(self, task: str, version: int) -> bytes:
        """Bytes of one version."""
        found = self._get(self._key(task, f"v{version}.safetensors"))
        if found is None:
            raise UnknownVersion(f"task {task!r} has no version {version} (it was deleted)")
        return found[0]

    def add_version(
        self, task: str, data: bytes, sha256: str = "", activate: bool = False
    ) -> tuple[int, bool]:
        """Claim a number with If-None-Match, then the bytes marker, then the pointer."""
        marker = self._key(task, f"sha256/{sha256 or digest_of(data)}")
        if (same := self._marked(task, marker)) is not None:
            return same, False
        with self._change(task):
            record = self.record(task)
            version = max(
                [self._pointer(task).get("next_version", 1)]
                + [v + 1 for v in (record.versions if record else [])]
            )
            while not self._create(self._key(task, f"v{version}.safetensors"), data):
                version += 1
            self._step("version")
            if not self._create(marker, str(version).encode()):  # identical bytes, another writer
                self._call("delete_object", Key=self._key(task, f"v{version}.safetensors"))
                return self._marked(task, marker), False
            self._step("marker")
            self._swap(self._key(task, "task.json"), lambda p: _bumped(p, version, activate))
            self._step("pointer")
        return version, True

    def _marked(self, task: str, marker: str) -> int | None:
        found = self._get(marker)
        if found is None:
            return None
        version = int(found[0])
        return version if self._get(self._key(task, f"v{version}.safetensors")) else None

    def set_active(self, task: str, version: int, rollout: dict | None = None) -> None:
        """Move the pointer by compare-and-swap, its rollout replaced."""
        with self._change(task):
            self._swap(self._key(task, "task.json"), lambda p: with_active(p, version, rollout))
            self._step("pointer")

    def set_rollout(self, task: str, rollout: dict | None) -> None:
        """Replace the task's rollout in its pointer by compare-and-swap."""
        with self._change(task):
            self._swap(self._key(task, "task.json"), lambda p: with_rollout(p, rollout))
            self._step("pointer")

    def delete_version(self, task: str, version: int) -> None:
        """Delete the version object and its bytes marker."""
        key = self._key(task, f"v{version}.safetensors")
        with self._change(task):
            found = self._get(key)
            if found is not None:
                self._call("delete_object", Key=self._key(task, f"sha256/{digest_of(found[0])}"))
                self._step("marker")
                self._call("delete_object", Key=key)
            self._step("version")

    def delete_task(self, task: str) -> None:
        """Delete every object of the task."""
        with self._change(task):
            keys = self._keys(self._key(task, ""))
            for start in range(0, len(keys), 1000):
                objects = [{"Key": k} for k in keys[start : start + 1000]]
                self._call("delete_objects", Delete={"Objects": objects, "Quiet": True})
            self._step("moved")

    # ---- registry snapshots ---------------------------------------------------------------
    @property
    def _snapshots(self) -> str:
        return f"{self.prefix}_snapshots/"

    def snapshot_names(self) -> list[str]:
        """Objects under `<prefix>_snapshots/`."""
        return [key[len(self._snapshots) :] for key in self._keys(self._snapshots)]

    def read_snapshot(self, name: str) -> bytes | None:
        """One snapshot object's bytes."""
        found = self._get(self._snapshots + name)
        return None if found is None else found[0]

    def write_snapshot(self, name: str, data: bytes, tag: str) -> None:
        """One PUT (an object is never seen half-written); older ones of `tag` deleted."""
        self._call("put_object", Key=self._snapshots + name, Body=data)
        for old in outdated_snapshots(self.snapshot_names(), tag):
            self._call("delete_object", Key=self._snapshots + old)

    # ---- the change log -------------------------------------------------------------------
    def _log(self, task: str, phase: str, change: str) -> None:
        """Append an entry to the log by compare-and-swap."""
        key = f"{self.prefix}_changes.json"
        self._swap(key, lambda log: log_append(log or new_log(), task, phase, change))

    def changes(self, since: Changes | None) -> Changes:
        """A conditional GET of the log: 304 when nothing changed."""
        condition = {"IfNoneMatch": since.token} if since is not None and since.token else {}
        try:
            found = self._get(f"{self.prefix}_changes.json", **condition)
        except ClientError as err:
            if _code(err) in ("304", "NotModified"):
                return since.unchanged()
            raise
        if found is None:
            return log_changes(new_log(), None if since is None else since.generation, None)
        value, etag = found
        return log_changes(json.loads(value), None if since is None else since.generation, etag)


def _bumped(pointer: dict | None, version: int, activate: bool) -> dict:
    """The pointer with its next number past `version`, active on it when `activate`."""
    pointer = dict(pointer or {})
    pointer["next_version"] = max(int(pointer.get("next_version", 1)), version + 1)
    return with_active(pointer, version, None) if activate else pointer
