"""One error shape everywhere: {"error": {"code": ..., "message": ...}} with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ..patches.patch_file import PatchError
from .responses import OrjsonResponse

log = logging.getLogger(__name__)
PREDICT_SHAPE = '{"inputs": ["text" or ["text", "text_pair"], ...], "version": optional int}'


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, a message saying what to do."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers=None) -> OrjsonResponse:
    """The JSON error body."""
    body = {"error": {"code": code, "message": message}}
    return OrjsonResponse(body, status_code=status, headers=headers)


def describe_validation(err: RequestValidationError) -> str:
    """A readable sentence from pydantic's error list."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        if e.get("type") == "json_invalid":
            parts.append('the body is not valid JSON; send {"inputs": ["text", ...]}')
            continue
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Map ApiError, PatchError, validation and HTTP errors onto the one shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError):
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(PatchError)
    async def _patch(_: Request, err: PatchError):
        status = 409 if err.code == "backbone_mismatch" else 422
        return error_response(status, err.code, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        message = describe_validation(err)
        if request.url.path.endswith("/predict"):
            message += f"; expected {PREDICT_SHAPE}"
        return error_response(422, "invalid_request", message)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), err.headers)
