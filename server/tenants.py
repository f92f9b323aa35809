"""Tenants: tokens scoped to tasks, read from a tokens file (`--tokens-file`), each with a
role and optional quota; beside them the two global tokens (--admin-token, --predict-token).

A scoped token acts only on the tasks its shell-style patterns match. Outside them a read or
predict answers exactly as for an absent task (no existence leak) and a write is forbidden.
Roles: `predict` predicts; `read` also reads tasks and downloads patches; `admin` also writes.
Each scoped token is one tenant in fair batching: its rows, whichever of its tasks they are
for, share one flow of `weight` (default 1).
The file is re-read when it changes; a malformed one keeps the previous tokens (logged).
Token names, never tokens, appear in logs and metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from .auth import Access
from .core.scheduling import Flow, task_flow
from .errors import MissingToken, QuotaExceeded, WrongToken

log = logging.getLogger(__name__)
ROLES = {  # what each role opens
    "predict": {Access.PREDICT},
    "read": {Access.PREDICT, Access.READ},
    "admin": {Access.PREDICT, Access.READ, Access.ADMIN},
}
RELOAD_SECONDS = 1.0  # the tokens file is looked at (one stat) at most this often


@dataclass
class Quota:
    """A token bucket of rows: `rows_per_second` refill, `burst` deep (thread-safe)."""

    rows_per_second: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, rows: int, who: str) -> None:
        """Spend `rows`, or QuotaExceeded (nothing spent) with the seconds until they fit."""
        with self.lock:
            now = time.monotonic()
            full = self.burst if self.tokens < 0 else self.tokens
            self.tokens = min(self.burst, full + (now - self.stamp) * self.rows_per_second)
            self.stamp = now
            if rows <= self.tokens:
                self.tokens -= rows
                return
            wait = (min(rows, self.burst) - self.tokens) / self.rows_per_second
        raise QuotaExceeded(
            f"the token {who!r} may send {self.rows_per_second:g} rows/s (burst "
            f"{self.burst:g}); this request's {rows} rows exceed what is left; retry in "
            f"{wait:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a token's name, what it opens, which tasks it may see (None:
    every task), its quota and its weight in fair batching."""

    name: str
    opens: frozenset[Access]
    patterns: tuple[str, ...] | None = None
    quota: Quota | None = None
    weight: float = 1.0

    def flow(self, task: str) -> Flow:
        """Whose fair share its rows count toward: a scoped token's tenant (all its tasks),
        else the task."""
        if self.patterns is None:
            return task_flow(task)
        return Flow(f"token:{self.name}", self.weight)

    def sees(self, task: str) -> bool:
        """Whether the task is within the token's scope."""
        return self.patterns is None or any(fnmatchcase(task, p) for p in self.patterns)

    def may(self, access: Access) -> bool:
        """Whether the token opens `access`."""
        return access is Access.OPEN or access in self.opens

    def spend(self, rows: int) -> None:
        """Take `rows` from the quota (QuotaExceeded beyond it)."""
        if self.quota is not None:
            self.quota.take(rows, self.name)


EVERYONE = Caller("anonymous", frozenset(Access))  # no token is configured for what it does
GLOBAL_CALLERS = {
    "admin": Caller("admin", frozenset(ROLES["admin"])),
    "predict": Caller("predict", frozenset(ROLES["read"])),  # predict and every read
}


def global_caller(name: str) -> Caller:
    """The caller of the global admin or predict token (every task)."""
    return GLOBAL_CALLERS[name]


@dataclass(frozen=True)
class ScopedToken:
    """One entry of the tokens file."""

    name: str
    sha256: str
    role: str
    tasks: tuple[str, ...]
    rows_per_second: float | None = None
    burst: float | None = None
    weight: float = 1.0

    def caller(self) -> Caller:
        """The caller this token makes (its quota fresh)."""
        quota = None
        if self.rows_per_second:
            quota = Quota(self.rows_per_second, self.burst or self.rows_per_second)
        return Caller(self.name, frozenset(ROLES[self.role]), self.tasks, quota, self.weight)


def parse_tokens(text: str, source: str) -> list[ScopedToken]:
    """The entries of a tokens file (YAML or JSON); ValueError saying what is wrong where."""
    try:
        value = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not YAML or JSON: {err}") from None
    if not isinstance(value, list):
        raise ValueError(f"{source}: expected a list of tokens, got {type(value).__name__}")
    tokens = [_entry(item, f"{source}[{i}]") for i, item in enumerate(value)]
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: token names must be unique")
    return tokens


def _entry(item: object, where: str) -> ScopedToken:
    """One checked entry."""
    allowed = {"name", "sha256", "role", "tasks", "rows_per_second", "burst", "weight"}
    if not isinstance(item, dict) or not {"name", "sha256", "role", "tasks"} <= set(item):
        raise ValueError(f"{where}: expected {{name, sha256, role, tasks}}, got {item!r}")
    if set(item) - allowed:
        raise ValueError(f"{where}: unknown keys {sorted(set(item) - allowed)}")
    name, digest, role, tasks = item["name"], item["sha256"], item["role"], item["tasks"]
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(f"{where}: name must be a string of 1-64 characters")
    if not isinstance(digest, str) or len(digest) != 64 or not _hex(digest):
        raise ValueError(
            f"{where}: sha256 must be a quoted string of 64 hex digits (`printf %s TOKEN | "
            f"sha256sum`), got {digest!r}"
        )
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {sorted(ROLES)}, got {role!r}")
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(f"{where}: tasks must be a list of patterns such as 'customer42-*'")
    rate, burst, weight = item.get("rows_per_second"), item.get("burst"), item.get("weight")
    for key, number in (("rows_per_second", rate), ("burst", burst), ("weight", weight)):
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number < 1e6
        ):
            raise ValueError(f"{where}: {key} must be a positive number, got {number!r}")
    return ScopedToken(name, digest.lower(), role, tuple(tasks), rate, burst, float(weight or 1))


def _hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def digest_of(token: str) -> str:
    """The hex sha256 a tokens file holds for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokensFile:
    """The scoped tokens of one file, re-read when it changes (a bad version is refused and
    the previous tokens kept, logged)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._entries: dict[str, tuple[ScopedToken, Caller]] = {}  # sha256 -> entry, caller
        self._stamp: tuple | None = None
        self._looked = 0.0
        self._lock = threading.Lock()
        self.reload(first=True)

    def reload(self, first: bool = False) -> bool:
        """Read the file now; whether the tokens changed. At start a bad file is an error."""
        try:
            stamp = self._stamp_of()
            tokens = parse_tokens(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as err:
            if first:
                raise ValueError(f"--tokens-file {self.path}: {err}") from None
            log.error("event=tokens_file_refused path=%s error=%s kept=previous", self.path, err)
            self._stamp = self._stamp_of()
            return False
        old = self._entries
        fresh = {}
        for token in tokens:  # a token whose entry did not change keeps its quota's bucket
            kept = old.get(token.sha256)
            fresh[token.sha256] = kept if kept and kept[0] == token else (token, token.caller())
        with self._lock:
            self._entries, self._stamp = fresh, stamp
        log.info("event=tokens_file_loaded path=%s tokens=%d", self.path, len(fresh))
        return True

    def _stamp_of(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._looked < RELOAD_SECONDS:
            return
        self._looked = now
        if self._stamp_of() != self._stamp:
            self.reload()

    def find(self, token: str) -> Caller | None:
        """The caller of a sent token, or None when the file has no such token (looked up by
        the token's sha256: a lookup reveals nothing of the tokens themselves)."""
        self._maybe_reload()
        entry = self._entries.get(digest_of(token))
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._entries)


def sent_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer ...` value (None without one)."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def refuse_missing(access: Access) -> MissingToken:
    """The error when a token is needed and none was sent."""
    return MissingToken(f"{access.value} needs 'Authorization: Bearer <token>'")


def refuse_role(caller: Caller, access: Access) -> WrongToken:
    """The error when a token's role does not open `access`."""
    return WrongToken(f"the token {caller.name!r} is not valid for {access.value}")
