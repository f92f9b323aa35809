"""What a route takes from its request: the server state, the token policy per route, and the
body under its size limit.

The dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a
hand-off per request. Tokens are checked from the headers alone, before any body is read; a
body is refused as soon as its size passes the limit, before it is buffered.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from ..auth import Access
from ..core.pipeline import Terms
from ..core.registry import unknown_task
from ..errors import BodyTooLarge, InvalidRequest, WrongToken
from ..limits import BodyLimit
from ..state import ServerState
from ..store.base import TASK_NAME
from ..tenants import EVERYONE, Caller

# path parameters: the pattern documents valid names in the OpenAPI page (an invalid one gets
# the InvalidTaskName answer, see server/http/edge.py)
TaskName = Annotated[
    str,
    Path(
        pattern=f"^{TASK_NAME.pattern}$",
        description="1-64 of a-z 0-9 _ . -",
        examples=["sentiment"],
    ),
]
VersionNumber = Annotated[int, Path(ge=1, description="a stored version", examples=[1])]
# a listing's page: how many tasks, and the cursor the previous page gave
PAGE_SIZE = 1000
PageLimit = Annotated[int, Query(ge=1, le=10_000, description="tasks per page")]
PageAfter = Annotated[str, Query(description="the previous page's cursor (`next`)")]


async def get_state(request: Request) -> ServerState:
    """The app's ServerState."""
    return request.app.state.server


StateDep = Annotated[ServerState, Depends(get_state)]


def requires(access: Access):
    """A dependency that checks the request's Bearer token against the policy for `access`
    and the path's task against the token's scope; the caller is kept for the route."""

    async def check(request: Request, state: StateDep) -> None:
        caller = state.settings.tokens.identify(access, request.headers.get("authorization", ""))
        task = request.path_params.get("task")
        if task is not None and not caller.sees(task):
            raise outside_scope(caller, access, task)
        request.state.caller = caller

    check.__name__ = f"require_{access.name.lower()}"
    return Depends(check)


def outside_scope(caller: Caller, access: Access, task: str) -> Exception:
    """A task outside the token's scope: absent for reads and predict, forbidden for writes."""
    if access is Access.ADMIN:
        return WrongToken(
            f"the token {caller.name!r} may not change {task!r}: its tasks are "
            f"{', '.join(caller.patterns or ())}"
        )
    return unknown_task(task)


def caller_of(request: Request) -> Caller:
    """Who sent the request (set by the route's token dependency; everyone on open routes)."""
    return getattr(request.state, "caller", EVERYONE)


AdminAuth = requires(Access.ADMIN)
PredictAuth = requires(Access.PREDICT)
ReaderAuth = requires(Access.READ)


TIMEOUT_HEADER = "x-bitpatch-timeout-ms"


def terms_of(request: Request, state: ServerState) -> Terms:
    """The request's deadline: now plus its X-Bitpatch-Timeout-Ms, else --max-queue-ms (0 and
    no header: none); InvalidRequest for a header that is not a positive number."""
    deadline = deadline_after(request.headers.get(TIMEOUT_HEADER), state.settings.max_queue_ms)
    return Terms(deadline, caller_of(request))


def deadline_after(timeout_ms: str | None, default_ms: float) -> float | None:
    """time.monotonic() `timeout_ms` (else `default_ms`; 0: no deadline) from now."""
    if timeout_ms is None:
        return time.monotonic() + default_ms / 1000 if default_ms else None
    try:
        value = float(timeout_ms)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3_600_000:
        raise InvalidRequest(
            f"X-Bitpatch-Timeout-Ms must be a number of milliseconds from 1 to 3600000, "
            f"got {timeout_ms!r}"
        )
    return time.monotonic() + value / 1000


async def read_limited(request: Request, limit: BodyLimit) -> bytes:
    """The body, or BodyTooLarge as soon as its declared or received size passes the limit
    (chunked bodies are counted as they arrive)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit.size:
        raise BodyTooLarge(
            f"the body is {declared} bytes; the limit is {limit.size} ({limit.setting})"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit.size:
            raise BodyTooLarge(f"the body exceeds {limit.size} bytes ({limit.setting})")
        chunks.append(chunk)
    return b"".join(chunks)
