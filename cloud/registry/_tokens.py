"""Registry access tokens: issued once, stored hashed, revocable, each with one role.

A token is a bearer string ``hpr1.<token id>.<secret>``. Only the SHA-256 of the random
256-bit secret is stored (a fast hash suffices: the secret is random, not a password).
Release managers may push, label and change lifecycles; services may only read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud import bearer
from cloud.registry._errors import InvalidArgument, NotFound
from cloud.registry._schema import AUDIT, TOKENS

__all__ = ["IssuedToken", "Principal", "Role", "TokenInfo", "TokenStore"]

_PREFIX = "hpr1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,199}$")


class Role(enum.Enum):
    """What a token may do."""

    SERVICE = "service"
    """Read releases (get, list, diff, check)."""
    RELEASE_MANAGER = "release-manager"
    """Everything a service may, plus push, label and lifecycle changes."""

    def allows(self, needed: Role) -> bool:
        """Whether this role may call a method that needs ``needed``."""
        return self is Role.RELEASE_MANAGER or needed is Role.SERVICE


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    """The token's name: the identity recorded as push actor and in the audit log."""
    role: Role
    """What it may do."""
    token_id: str
    """The token's public id."""


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A token just issued; ``token`` is never stored and never shown again."""

    token_id: str
    """Public id (safe to log)."""
    name: str
    """Who or what holds it."""
    role: Role
    """What it may do."""
    token: str = dataclasses.field(repr=False)
    """The bearer token."""


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """A stored token, without its secret."""

    token_id: str
    """Public id."""
    name: str
    """Holder."""
    role: Role
    """What it may do."""
    created_at: dt.datetime
    """When it was issued."""
    revoked_at: dt.datetime | None
    """When it was revoked, or ``None`` while valid."""


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class TokenStore:
    """Issues, checks and revokes registry tokens in the registry database.

    Args:
        engine: the registry database (migrated).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def issue(self, name: str, role: Role, *, actor: str) -> IssuedToken:
        """Issue a token for ``name`` with ``role``; recorded in the audit log.

        Args:
            name: who or what holds it, e.g. ``alice`` or ``ci-release``.
            role: what it may do.
            actor: who issued it (for the audit log).

        Raises:
            InvalidArgument: ``name`` is not a valid token name.
        """
        if not _NAME.match(name):
            raise InvalidArgument(
                "name",
                f"invalid token name {name!r}: 1-200 letters, digits, '@', '.', '_' or '-', "
                "starting with a letter or digit",
            )
        minted = bearer.mint(_PREFIX)
        token_id = minted.token_id
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            await conn.execute(
                TOKENS.insert().values(
                    token_id=token_id,
                    name=name,
                    role=role.value,
                    secret_sha256=minted.secret_sha256,
                    created_at=now,
                )
            )
            await conn.execute(
                AUDIT.insert().values(
                    at=now,
                    actor=actor,
                    action="token.issue",
                    target=token_id,
                    details_json=json.dumps({"name": name, "role": role.value}),
                )
            )
        return IssuedToken(token_id, name, role, minted.token)

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal of a valid, unrevoked token, else ``None``."""
        parsed = bearer.parse(token, _PREFIX)
        if parsed is None:
            return None
        token_id, secret = parsed
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(TOKENS.c.name, TOKENS.c.role, TOKENS.c.secret_sha256).where(
                        TOKENS.c.token_id == token_id, TOKENS.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or not bearer.secret_matches(row.secret_sha256, secret):
            return None
        return Principal(name=row.name, role=Role(row.role), token_id=token_id)

    async def revoke(self, token_id: str, *, actor: str) -> None:
        """Revoke a token; calls with it are refused from now on.

        Raises:
            NotFound: no unrevoked token has that id.
        """
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                TOKENS.update()
                .where(TOKENS.c.token_id == token_id, TOKENS.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                raise NotFound("token", token_id)
            await conn.execute(
                AUDIT.insert().values(
                    at=now, actor=actor, action="token.revoke", target=token_id, details_json="{}"
                )
            )

    async def list(self) -> list[TokenInfo]:
        """Every token, newest first (never secrets)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(TOKENS).order_by(TOKENS.c.created_at.desc(), TOKENS.c.token_id)
                )
            ).all()
        return [
            TokenInfo(
                token_id=r.token_id,
                name=r.name,
                role=Role(r.role),
                created_at=_aware(r.created_at),
                revoked_at=None if r.revoked_at is None else _aware(r.revoked_at),
            )
            for r in rows
        ]
