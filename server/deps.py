"""FastAPI dependencies: the server state and Bearer-token checks.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, and that hand-off
was ~40% of the event loop's time per predict (py-spy, docs/BENCHMARKS.md tuning log).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from .errors import ApiError
from .state import ServerState


async def get_state(request: Request) -> ServerState:
    """The app's ServerState."""
    return request.app.state.server


StateDep = Annotated[ServerState, Depends(get_state)]


def _check_token(request: Request, expected: str | None, scope: str) -> None:
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise ApiError(
            401,
            "unauthorized",
            f"{scope} needs 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        raise ApiError(403, "forbidden", f"the token is not valid for {scope}")


async def require_admin(request: Request, state: StateDep) -> None:
    """PUT, activate and DELETE need the admin token when one is set."""
    _check_token(request, state.settings.admin_token, "this management endpoint")


async def require_predict(request: Request, state: StateDep) -> None:
    """Predict needs the predict token when one is set."""
    _check_token(request, state.settings.predict_token, "predict")


AdminAuth = Depends(require_admin)
PredictAuth = Depends(require_predict)
