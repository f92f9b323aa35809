"""A task's rollout: a candidate version answering a share of the task's requests (canary),
another run beside the serving version on a share of them (shadow), and a guard that ends the
rollout when the candidate falls behind. The rollout is stored with the task (its pointer), so
every replica routes alike; a request's share is decided by a stable hash of (task, key)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from ..errors import InvalidRequest

SHAPE = (
    '{"canary": {"version": V, "percent": P}, "shadow": {"version": S, "percent": Q}, '
    '"guard": {"metric": "accuracy" | "agreement", "min_rows": N, "max_drop": D}} '
    "(each part optional, canary or shadow at least)"
)
METRICS = ("accuracy", "agreement")
BUCKETS = 100


@dataclass(frozen=True)
class Split:
    """A version and the percent of requests it takes (canary) or shadows (shadow)."""

    version: int
    percent: float

    def to_json(self) -> dict:
        return {"version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class Guard:
    """When to end a rollout by itself: the candidate's `metric` over at least `min_rows` rows
    falls more than `max_drop` below the active version's (agreement: below 100 - max_drop)."""

    metric: str
    min_rows: int
    max_drop: float

    def to_json(self) -> dict:
        return {"metric": self.metric, "min_rows": self.min_rows, "max_drop": self.max_drop}


@dataclass(frozen=True)
class Ended:
    """Why and when (Unix seconds) a rollout ended."""

    reason: str
    at: float

    def to_json(self) -> dict:
        stamp = datetime.fromtimestamp(self.at, timezone.utc).isoformat(timespec="seconds")
        return {"reason": self.reason, "at": stamp.replace("+00:00", "Z")}


@dataclass(frozen=True)
class Rollout:
    """One rollout of a task; `id` tells replicas' figures of one rollout from the next."""

    id: str
    canary: Split | None = None
    shadow: Split | None = None
    guard: Guard | None = None
    ended: Ended | None = None

    @property
    def live(self) -> bool:
        """Whether it still routes requests (it has not ended)."""
        return self.ended is None

    @property
    def candidate(self) -> Split | None:
        """The version under test: the canary, or without one the shadow."""
        return self.canary or self.shadow

    def versions(self) -> set[int]:
        """The versions a live rollout names."""
        if not self.live:
            return set()
        return {s.version for s in (self.canary, self.shadow) if s is not None}

    def route(self, task: str, key: str, active: int) -> tuple[int, int | None]:
        """The version that answers a request with this key, and the version that shadows it
        (None: not shadowed)."""
        serving = active
        if self.canary is not None and bucket(task, key, "canary") < self.canary.percent:
            serving = self.canary.version
        shadow = self.shadow
        if shadow is None or shadow.version == serving:
            return serving, None
        return serving, shadow.version if bucket(task, key, "shadow") < shadow.percent else None

    def end(self, reason: str) -> Rollout:
        """This rollout, ended now."""
        return replace(self, ended=Ended(reason, time.time()))

    def to_json(self) -> dict:
        """The stored form (in the task's pointer)."""
        return {
            "id": self.id,
            "canary": self.canary.to_json() if self.canary else None,
            "shadow": self.shadow.to_json() if self.shadow else None,
            "guard": self.guard.to_json() if self.guard else None,
            "ended": {"reason": self.ended.reason, "at": self.ended.at} if self.ended else None,
        }

    @classmethod
    def from_json(cls, value: dict) -> Rollout:
        """The rollout a pointer holds (written by to_json; ValueError if it is not)."""
        parts = {name: value.get(name) for name in ("canary", "shadow", "guard")}
        ended = value.get("ended")
        return cls(
            str(value["id"]),
            Split(**parts["canary"]) if parts["canary"] else None,
            Split(**parts["shadow"]) if parts["shadow"] else None,
            Guard(**parts["guard"]) if parts["guard"] else None,
            Ended(str(ended["reason"]), float(ended["at"])) if ended else None,
        )


def bucket(task: str, key: str, part: str) -> int:
    """The key's bucket (0-99) for one part of a task's rollout: the same on every replica and
    after every restart, so a key keeps its version while the percent only grows."""
    digest = hashlib.blake2b(f"{part}\0{task}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def parse_rollout(body: object) -> Rollout:
    """A new rollout from a `PUT /tasks/{task}/rollout` body; InvalidRequest (422) naming the
    field at fault. Versions are checked against the task by the registry."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object: {SHAPE}")
    extra = sorted(set(body) - {"canary", "shadow", "guard"})
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; the body is {SHAPE}")
    canary = _split(body.get("canary"), "canary")
    shadow = _split(body.get("shadow"), "shadow")
    if canary is None and shadow is None:
        raise InvalidRequest(f"a rollout needs a canary or a shadow (or both): {SHAPE}")
    if canary and shadow and canary.version == shadow.version:
        raise InvalidRequest(
            f"canary and shadow are both version {canary.version}; shadow another version, "
            "or leave the shadow out"
        )
    guard = _guard(body.get("guard"), shadow)
    return Rollout(uuid.uuid4().hex[:12], canary, shadow, guard)


def _split(value: object, name: str) -> Split | None:
    if value is None:
        return None
    shape = f'"{name}": {{"version": <a stored version>, "percent": <0 < P <= 100>}}'
    if not isinstance(value, dict) or set(value) != {"version", "percent"}:
        raise InvalidRequest(f"{name} must be {shape}")
    version, percent = value["version"], value["percent"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidRequest(f"{name}.version must be an integer >= 1, got {version!r}: {shape}")
    if not _number(percent) or not 0 < percent <= 100:
        raise InvalidRequest(
            f"{name}.percent must be a number above 0 and at most 100, got {percent!r}"
        )
    return Split(version, float(percent))


def _guard(value: object, shadow: Split | None) -> Guard | None:
    if value is None:
        return None
    shape = '"guard": {"metric": "accuracy" | "agreement", "min_rows": N >= 1, "max_drop": D >= 0}'
    if not isinstance(value, dict) or set(value) != {"metric", "min_rows", "max_drop"}:
        raise InvalidRequest(f"guard must be {shape}")
    metric, rows, drop = value["metric"], value["min_rows"], value["max_drop"]
    if metric not in METRICS:
        raise InvalidRequest(f"guard.metric must be one of {list(METRICS)}, got {metric!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidRequest(f"guard.min_rows must be an integer >= 1, got {rows!r}")
    if not _number(drop) or not 0 <= drop <= 100:
        raise InvalidRequest(f"guard.max_drop must be a number from 0 to 100, got {drop!r}")
    if metric == "agreement" and shadow is None:
        raise InvalidRequest(
            "guard.metric 'agreement' compares the shadow with the serving version; add a "
            'shadow, or guard on "accuracy" (from POST /tasks/{task}/evaluate)'
        )
    return Guard(metric, rows, float(drop))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
