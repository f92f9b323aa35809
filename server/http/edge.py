"""The HTTP edge: the one place where errors become status codes and JSON error bodies.

Each API speaks its own dialect of errors, chosen by the path:
- native (every other path): `{"error": {"code": ..., "message": ...}}`;
- the Open Inference Protocol (`/v2`): `{"error": "<message>"}`, and 400 for a bad request or
  an unknown model or version, as Triton answers (tritonclient reads the string);
- OpenAI (`/v1`): `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...patches.patch_file import PatchError
from .. import errors
from ..core.registry import invalid_task_name
from ..metrics import RequestCount

log = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """application/json, serialised by orjson (fast on the predict path)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


REPLICA = f"{socket.gethostname()}-{os.getpid()}"  # which server process answered
REPLICA_HEADER = (b"x-bitpatch-replica", REPLICA.encode("latin-1", "replace"))
COUNT_KEY = "bitpatch.count"  # where a predict-like route leaves its RequestCount

STATUS: dict[type[errors.ServerError], int] = {
    errors.InvalidRequest: 422,
    errors.InvalidTaskName: 422,
    errors.UnsupportedMediaType: 415,
    errors.BodyTooLarge: 413,
    errors.MissingToken: 401,
    errors.WrongToken: 403,
    errors.UnknownTask: 404,
    errors.UnknownVersion: 404,
    errors.UnknownRoute: 404,
    errors.VersionActive: 409,
    errors.RolloutConflict: 409,
    errors.Overloaded: 503,
    errors.TaskQueueFull: 429,
    errors.QuotaExceeded: 429,
    errors.DeadlineExceeded: 503,
    errors.NotReady: 503,
    errors.StoreUnavailable: 503,
}


BAD_REQUEST = (errors.InvalidRequest, errors.InvalidTaskName, errors.UnknownTask)
DIALECT_STATUS: dict[str, dict[type[errors.ServerError], int]] = {
    "native": {},
    "v2": {cls: 400 for cls in (*BAD_REQUEST, errors.UnknownVersion)},
    "openai": {errors.InvalidRequest: 400, errors.InvalidTaskName: 404},
}
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 500: "server_error"}
OPENAI_CODES = {"unknown_task": "model_not_found", "invalid_task_name": "model_not_found"}


def dialect_of(path: str) -> str:
    """Which API a path belongs to: 'v2', 'openai' or 'native'."""
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    return "openai" if path.startswith("/v1/") else "native"


def status_of(err: Exception, dialect: str = "native") -> int:
    """The HTTP status a domain error (or a patch error) answers with in a dialect."""
    if isinstance(err, PatchError):
        return 409 if err.code == "backbone_mismatch" else 422
    for cls in type(err).__mro__:
        if cls in DIALECT_STATUS[dialect]:
            return DIALECT_STATUS[dialect][cls]
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(dialect: str, status: int, code: str, message: str, param=None) -> dict:
    """The JSON error body of a dialect."""
    if dialect == "v2":
        return {"error": message}
    if dialect == "openai":
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        kind = OPENAI_TYPES.get(status, fallback)
        code = OPENAI_CODES.get(code, code)
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers=None, dialect: str = "native", param=None
) -> OrjsonResponse:
    """The JSON error answer."""
    body = error_body(dialect, status, code, message, param)
    return OrjsonResponse(body, status_code=status, headers=headers)


def domain_error_response(
    err: errors.ServerError | PatchError, dialect: str = "native"
) -> OrjsonResponse:
    """A domain error as its HTTP answer."""
    headers = getattr(err, "headers", None)
    if isinstance(err, errors.MissingToken):
        headers = {"WWW-Authenticate": "Bearer"}
    status = status_of(err, dialect)
    return error_response(status, err.code, str(err), headers, dialect, getattr(err, "param", None))


def describe_validation(err: RequestValidationError) -> str:
    """A readable sentence from pydantic's error list (path and query parameters)."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Domain, patch, validation and routing errors onto the one shape; anything else a 500."""

    @app.exception_handler(errors.ServerError)
    async def _domain(request: Request, err: errors.ServerError):
        return domain_error_response(err, dialect_of(request.url.path))

    @app.exception_handler(PatchError)
    async def _patch(request: Request, err: PatchError):
        return domain_error_response(err, dialect_of(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        dialect = dialect_of(request.url.path)
        if any(tuple(e.get("loc", ()))[:2] == ("path", "task") for e in err.errors()):
            task = request.path_params.get("task", "")
            return domain_error_response(invalid_task_name(task), dialect)
        status = 400 if dialect != "native" else 422
        return error_response(status, "invalid_request", describe_validation(err), None, dialect)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        dialect = dialect_of(request.url.path)
        return error_response(err.status_code, code, str(err.detail), err.headers, dialect)

    app.add_middleware(EdgeMiddleware)


def counted(request: Request, api: str, task: str | None = None) -> RequestCount:
    """Count this request in the request metrics when it is answered (see EdgeMiddleware)."""
    caller = getattr(request.state, "caller", None)
    token = caller.name if caller is not None and caller.name != "anonymous" else None
    count = RequestCount(api, task, token=token)
    request.scope[COUNT_KEY] = count
    return count


def count_answer(scope: Scope, status: int) -> None:
    """The request metrics of a counted request, by the status it was answered with."""
    count = scope.get(COUNT_KEY)
    if count is None:
        return
    state = scope["app"].state.server
    state.metrics.count_request(count, status, state.has_task)


class EdgeMiddleware:
    """ASGI middleware: every answer names the replica that gave it (`X-Bitpatch-Replica`);
    predict-like requests are counted by the status they got; an exception no handler knew
    becomes a logged JSON 500, so the connection stays usable (the client gets a complete
    answer instead of a dropped socket)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), REPLICA_HEADER]
                count_answer(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as err:
            log.exception("event=unexpected_error path=%s", scope.get("path"))
            if started:
                raise
            message = (
                f"the server failed on this request ({type(err).__name__}); "
                "it is logged - retry, and report it if it persists"
            )
            dialect = dialect_of(scope.get("path", ""))
            body = orjson.dumps(error_body(dialect, 500, "internal_error", message))
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                REPLICA_HEADER,
            ]
            count_answer(scope, 500)
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
