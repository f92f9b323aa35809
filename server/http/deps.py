"""FastAPI dependencies: the server state and Bearer-token checks.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a hand-off per
request. Tokens are checked from the headers alone, before any body is read.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request

from ..errors import MissingToken, WrongToken
from ..state import ServerState
from ..store.base import TASK_NAME

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


async def get_state(request: Request) -> ServerState:
    """The app's ServerState."""
    return request.app.state.server


StateDep = Annotated[ServerState, Depends(get_state)]


def check_token(request: Request, accepted: tuple[str, ...], scope: str) -> None:
    """Nothing when no token is configured; else one of `accepted` as a Bearer token."""
    check_bearer(request.headers.get("authorization", ""), accepted, scope)


def check_bearer(header: str, accepted: tuple[str, ...], scope: str) -> None:
    """`check_token` of an Authorization value (an HTTP header or gRPC metadata)."""
    if not accepted:
        return
    if not header.lower().startswith("bearer "):
        raise MissingToken(f"{scope} needs 'Authorization: Bearer <token>'")
    sent = header[7:].strip().encode()
    if not any(hmac.compare_digest(sent, token.encode()) for token in accepted):
        raise WrongToken(f"the token is not valid for {scope}")


async def require_admin(request: Request, state: StateDep) -> None:
    """Uploads, activation and deletion need the admin token when one is set."""
    admin = state.settings.admin_token
    check_token(request, (admin,) if admin else (), "this management endpoint")


async def require_predict(request: Request, state: StateDep) -> None:
    """Predict needs the predict (or the admin) token when a predict token is set."""
    s = state.settings
    check_token(request, s.read_tokens if s.predict_token else (), "predict")


async def require_reader(request: Request, state: StateDep) -> None:
    """Listings and downloads need the predict or the admin token when either is set."""
    check_token(request, state.settings.read_tokens, "reading tasks and patches")


AdminAuth = Depends(require_admin)
PredictAuth = Depends(require_predict)
ReaderAuth = Depends(require_reader)
