"""The token policy: which Bearer tokens open which access, for HTTP headers and gRPC metadata
alike: the two global tokens (compared in constant time) and the scoped tokens of a tokens
file (server/tenants.py). Checking a token names its caller."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .errors import MissingToken, WrongToken

if TYPE_CHECKING:
    from .tenants import Caller, TokensFile


class Access(Enum):
    """What a route or RPC does, as the token policy sees it; the value names it in errors."""

    OPEN = "open routes"
    READ = "reading tasks and patches"
    PREDICT = "predict"
    ADMIN = "this management endpoint"


@dataclass(frozen=True)
class TokenPolicy:
    """The admin token opens everything; the predict token opens predict and reads; a scoped
    token what its role opens, on its tasks. Where no token is set and no tokens file is
    given, what a token would guard is open (predict is open while only an admin token is
    set)."""

    admin: str | None
    predict: str | None
    scoped: TokensFile | None = None

    def accepted(self, access: Access) -> tuple[str, ...]:
        """Global tokens that open `access` (empty: none does)."""
        both = tuple(t for t in (self.predict, self.admin) if t)
        if access is Access.ADMIN:
            return (self.admin,) if self.admin else ()
        if access is Access.PREDICT:
            return both if self.predict else ()
        return both if access is Access.READ else ()

    def guarded(self, access: Access) -> bool:
        """Whether `access` needs a token at all."""
        return access is not Access.OPEN and (bool(self.accepted(access)) or bool(self.scoped))

    def identify(self, access: Access, authorization: str) -> Caller:
        """The caller of the `Authorization` value when it opens `access`; MissingToken or
        WrongToken otherwise (an open access names the token's caller when one is sent)."""
        from .tenants import EVERYONE, refuse_missing, refuse_role, sent_token

        token = sent_token(authorization)
        caller = self._caller_of(token) if token is not None else None
        if not self.guarded(access):
            return caller or EVERYONE
        if token is None:
            raise refuse_missing(access)
        if caller is None:
            raise WrongToken(f"the token is not valid for {access.value}")
        if not caller.may(access):
            raise refuse_role(caller, access)
        return caller

    def _caller_of(self, token: str) -> Caller | None:
        """The global or scoped caller a token names (None: no such token)."""
        from .tenants import global_caller

        sent = token.encode()
        for name, known in (("admin", self.admin), ("predict", self.predict)):
            if known and hmac.compare_digest(sent, known.encode()):
                return global_caller(name)
        return self.scoped.find(token) if self.scoped is not None else None

    def check(self, access: Access, authorization: str) -> None:
        """Nothing when `access` is open or the `Authorization` value carries a token that
        opens it; MissingToken or WrongToken otherwise."""
        self.identify(access, authorization)

    def grants(self, authorization: str) -> dict:
        """What the `Authorization` value opens, by access ('read', 'predict', 'admin'), with
        the token's name and task patterns; WrongToken for a sent token nobody knows."""
        from .tenants import sent_token

        token = sent_token(authorization)
        caller = self._caller_of(token) if token is not None else None
        if token is not None and caller is None and (self.accepted(Access.READ) or self.scoped):
            scoped = ", nor one of its tokens file" if self.scoped else ""
            raise WrongToken(
                f"the token is neither this server's admin nor its predict token{scoped}"
            )
        opened: dict = {}
        for access in (Access.READ, Access.PREDICT, Access.ADMIN):
            try:
                self.identify(access, authorization)
                opened[access.name.lower()] = True
            except (MissingToken, WrongToken):
                opened[access.name.lower()] = False
        if caller is not None:
            opened["name"] = caller.name
            opened["tasks"] = list(caller.patterns) if caller.patterns is not None else None
        return opened
