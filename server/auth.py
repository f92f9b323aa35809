"""The token policy: which Bearer tokens open which access, for HTTP headers and gRPC metadata
alike (tokens are compared in constant time)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from .errors import MissingToken, WrongToken


class Access(Enum):
    """What a route or RPC does, as the token policy sees it; the value names it in errors."""

    OPEN = "open routes"
    READ = "reading tasks and patches"
    PREDICT = "predict"
    ADMIN = "this management endpoint"


@dataclass(frozen=True)
class TokenPolicy:
    """The admin token opens everything; the predict token opens predict and reads. Where no
    token is set, what it guards is open (predict is open while only an admin token is set)."""

    admin: str | None
    predict: str | None

    def accepted(self, access: Access) -> tuple[str, ...]:
        """Tokens that open `access` (empty: open to all)."""
        both = tuple(t for t in (self.predict, self.admin) if t)
        if access is Access.ADMIN:
            return (self.admin,) if self.admin else ()
        if access is Access.PREDICT:
            return both if self.predict else ()
        return both if access is Access.READ else ()

    def grants(self, authorization: str) -> dict[str, bool]:
        """What the `Authorization` value opens, by access ('read', 'predict', 'admin');
        WrongToken for a sent token that is neither the admin nor the predict token."""
        known = tuple(t for t in (self.admin, self.predict) if t)
        if known and authorization.lower().startswith("bearer "):
            sent = authorization[7:].strip().encode()
            if not any(hmac.compare_digest(sent, token.encode()) for token in known):
                raise WrongToken("the token is neither this server's admin nor its predict token")
        opened = {}
        for access in (Access.READ, Access.PREDICT, Access.ADMIN):
            try:
                self.check(access, authorization)
                opened[access.name.lower()] = True
            except (MissingToken, WrongToken):
                opened[access.name.lower()] = False
        return opened

    def check(self, access: Access, authorization: str) -> None:
        """Nothing when `access` is open or the `Authorization` value carries a token that
        opens it; MissingToken or WrongToken otherwise."""
        accepted = self.accepted(access)
        if not accepted:
            return
        if not authorization.lower().startswith("bearer "):
            raise MissingToken(f"{access.value} needs 'Authorization: Bearer <token>'")
        sent = authorization[7:].strip().encode()
        if not any(hmac.compare_digest(sent, token.encode()) for token in accepted):
            raise WrongToken(f"the token is not valid for {access.value}")
