"""Per-hospital credentials: issued once, stored hashed, checked on every tunnel, revocable.

A credential is a bearer token ``hpc1.<credential id>.<secret>`` (`cloud.bearer`): only the
secret's digest is stored, and the token is shown once, when issued.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud import bearer
from cloud.fleet._schema import CREDENTIALS

__all__ = ["CredentialError", "CredentialInfo", "CredentialStore", "IssuedCredential"]

_PREFIX = "hpc1"
_BATCH = 500
_HOSPITAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CredentialError(Exception):
    """A credential cannot be issued or revoked; the message says why."""


@dataclasses.dataclass(frozen=True)
class IssuedCredential:
    """A credential just issued; ``token`` is never stored and never shown again."""

    credential_id: str
    """The public id of the credential (safe to log)."""
    hospital_id: str
    """The hospital the credential authenticates."""
    token: str = dataclasses.field(repr=False)
    """The bearer token to give the hospital's front-end server."""


@dataclasses.dataclass(frozen=True)
class CredentialInfo:
    """What is known about a stored credential (no secret)."""

    credential_id: str
    """The public id."""
    hospital_id: str
    """The hospital it authenticates."""
    label: str
    """Free text given at issue time."""
    created_at: dt.datetime
    """When it was issued."""
    revoked_at: dt.datetime | None
    """When it was revoked, or ``None`` while valid."""


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class CredentialStore:
    """Issues, checks and revokes hospital credentials in the fleet database.

    Args:
        engine: the fleet database (migrated).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def issue(self, hospital_id: str, *, label: str = "") -> IssuedCredential:
        """Issue a new credential for ``hospital_id`` (earlier ones stay valid until revoked).

        Raises:
            CredentialError: ``hospital_id`` is not a valid hospital id.
        """
        if not _HOSPITAL_ID.match(hospital_id):
            raise CredentialError(
                f"invalid hospital id {hospital_id!r}: 1-64 characters of letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        minted = bearer.mint(_PREFIX)
        async with self._engine.begin() as conn:
            await conn.execute(
                CREDENTIALS.insert().values(
                    credential_id=minted.token_id,
                    hospital_id=hospital_id,
                    secret_sha256=minted.secret_sha256,
                    label=label,
                    created_at=dt.datetime.now(dt.UTC),
                )
            )
        return IssuedCredential(
            credential_id=minted.token_id,
            hospital_id=hospital_id,
            token=minted.token,
        )

    async def authenticate(self, token: str | None) -> CredentialInfo | None:
        """The valid, unrevoked credential ``token`` proves, else ``None``.

        Its ``hospital_id`` and ``credential_id`` are what the tunnel gateway needs (the
        result satisfies `mesh.tunnel.Principal`): which hospital, and which credential to
        count tunnels against and to close tunnels of when it is revoked.
        """
        parsed = bearer.parse(token, _PREFIX)
        if parsed is None:
            return None
        credential_id, secret = parsed
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(CREDENTIALS).where(
                        CREDENTIALS.c.credential_id == credential_id,
                        CREDENTIALS.c.revoked_at.is_(None),
                    )
                )
            ).first()
        if row is None or not bearer.secret_matches(row.secret_sha256, secret):
            return None
        return _info(row)

    async def get(self, credential_id: str) -> CredentialInfo | None:
        """The credential with that id (valid or revoked), or ``None``."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(CREDENTIALS).where(CREDENTIALS.c.credential_id == credential_id)
                )
            ).first()
        return None if row is None else _info(row)

    async def revoked(self, credential_ids: Iterable[str]) -> set[str]:
        """Which of ``credential_ids`` are revoked (or no longer exist).

        Nodes ask this every second about the credentials of their live tunnels: a primary
        key lookup per id, in batches, with no dependence on anyone's clock.
        """
        wanted = sorted(set(credential_ids))
        valid: set[str] = set()
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                rows = await conn.execute(
                    sa.select(CREDENTIALS.c.credential_id).where(
                        CREDENTIALS.c.credential_id.in_(batch),
                        CREDENTIALS.c.revoked_at.is_(None),
                    )
                )
                valid.update(r.credential_id for r in rows)
        return set(wanted) - valid

    async def revoke(self, credential_id: str) -> CredentialInfo:
        """Revoke a credential; tunnels opened with it are refused from now on.

        Live tunnels of the credential are closed by the nodes holding them (they poll
        `revoked`; ``CloseCredentialTunnels`` makes it immediate).

        Raises:
            CredentialError: no credential has that id.
        """
        async with self._engine.begin() as conn:
            result = await conn.execute(
                CREDENTIALS.update()
                .where(
                    CREDENTIALS.c.credential_id == credential_id,
                    CREDENTIALS.c.revoked_at.is_(None),
                )
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
            if result.rowcount == 0:
                exists = (
                    await conn.execute(
                        sa.select(CREDENTIALS.c.credential_id).where(
                            CREDENTIALS.c.credential_id == credential_id
                        )
                    )
                ).first()
                if exists is None:
                    raise CredentialError(f"no credential with id {credential_id!r}")
        info = await self.get(credential_id)
        assert info is not None  # it existed a moment ago and credentials are never deleted
        return info

    async def list(self, hospital_id: str | None = None) -> list[CredentialInfo]:
        """Stored credentials, newest first, of one hospital or all."""
        query = sa.select(CREDENTIALS).order_by(
            CREDENTIALS.c.created_at.desc(), CREDENTIALS.c.credential_id
        )
        if hospital_id is not None:
            query = query.where(CREDENTIALS.c.hospital_id == hospital_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_info(r) for r in rows]


def _info(row: sa.Row[Any]) -> CredentialInfo:
    return CredentialInfo(
        credential_id=row.credential_id,
        hospital_id=row.hospital_id,
        label=row.label,
        created_at=_aware(row.created_at) or dt.datetime.now(dt.UTC),
        revoked_at=_aware(row.revoked_at),
    )
