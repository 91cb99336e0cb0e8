"""Who is calling: the one authentication of every public patient-facing call.

A servicer of the patient API asks `Authenticator.caller` (or `authenticate_app` /
`authenticate_account` with the call's metadata) at the top of each method and gets a
`Caller`: the app (its key checked, its rate limit taken), the client's address, and for
account calls the session. Failures are tree errors (UNAUTHENTICATED with a reason,
RESOURCE_EXHAUSTED for the app's rate limit), which the servicer lets through to the
cloud's error mapping: nothing here ends a call itself.

The caller is also put in the `CALLER` context variable for the rest of the call, so code
further down (logs, orders, attribution) can read the app and account without passing
them along.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Sequence
from typing import Any

import grpc

from cloud.accounts._apps import App, AppStore
from cloud.accounts._errors import RateLimited
from cloud.accounts._limits import Buckets
from cloud.accounts._signin import Session, Sessions

__all__ = ["APP_KEY_HEADER", "CALLER", "Authenticator", "Caller", "client_address"]

APP_KEY_HEADER = "x-hplus-app-key"
"""Metadata key of the app key."""
_AUTHORIZATION = "authorization"
_BEARER = "Bearer "

Metadata = Sequence[tuple[str, Any]]


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who made a call: the app, where from, and (for account calls) the session."""

    app: App
    """The app whose key the call carried."""
    address: str
    """The client's address as the node sees it (a proxy's, behind one)."""
    session: Session | None = None
    """The account's session, for calls that need one."""

    @property
    def account_id(self) -> str | None:
        """The calling account, if signed in."""
        return None if self.session is None else self.session.account_id


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("hplus_caller", default=None)
"""The caller of the call being served (``None`` outside an authenticated call)."""


def client_address(peer: str) -> str:
    """The address of a grpc peer string without its port (``ipv4:1.2.3.4:5`` → ``1.2.3.4``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer or "unknown"


def _value(metadata: Metadata, key: str) -> str | None:
    for k, v in metadata:
        if k == key:
            return v if isinstance(v, str) else None
    return None


class Authenticator:
    """Checks app keys (and their rate limits) and access tokens.

    Args:
        apps: the app keys.
        sessions: the access tokens.
        buckets: where each app's rate limit is counted.
    """

    def __init__(self, apps: AppStore, sessions: Sessions, buckets: Buckets) -> None:
        self._apps = apps
        self._sessions = sessions
        self._buckets = buckets

    async def authenticate_app(self, metadata: Metadata, *, peer: str = "") -> Caller:
        """The caller of a call that needs only an app key.

        Args:
            metadata: the call's invocation metadata.
            peer: the call's ``context.peer()``.

        Raises:
            mesh.errors.Unauthenticated: APP_KEY_MISSING, APP_KEY_INVALID, APP_KEY_REVOKED.
            RateLimited: the app's rate limit (``limit`` app).
        """
        app = await self._apps.authenticate(_value(metadata, APP_KEY_HEADER))
        wait = await self._buckets.take(f"app:{app.app_id}", app.rate)
        if wait is not None:
            raise RateLimited("app", wait, "calls")
        caller = Caller(app, client_address(peer))
        CALLER.set(caller)
        return caller

    async def authenticate_account(self, metadata: Metadata, *, peer: str = "") -> Caller:
        """The caller of a call that needs an app key and an account's access token.

        Raises:
            mesh.errors.Unauthenticated: an app key reason, or TOKEN_MISSING,
                TOKEN_MALFORMED, TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_REVOKED,
                TOKEN_APP_MISMATCH.
            RateLimited: the app's rate limit.
        """
        caller = await self.authenticate_app(metadata, peer=peer)
        header = _value(metadata, _AUTHORIZATION) or ""
        token = header[len(_BEARER) :].strip() if header.startswith(_BEARER) else header
        session = await self._sessions.authenticate(token or None, caller.app)
        caller = dataclasses.replace(caller, session=session)
        CALLER.set(caller)
        return caller

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any], *, account: bool) -> Caller:
        """`authenticate_account` (or `authenticate_app`) of a servicer's call.

        Args:
            context: the call.
            account: whether the call needs a signed-in account.
        """
        metadata = tuple(context.invocation_metadata() or ())
        peer = context.peer() or ""
        if account:
            return await self.authenticate_account(metadata, peer=peer)
        return await self.authenticate_app(metadata, peer=peer)
