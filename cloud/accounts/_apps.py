"""Patient apps: one key per app (mini-program, hospital app, web), hashed, revocable.

An app key is a bearer token ``hpk1.<app id>.<secret>`` (`cloud.bearer`) sent in the
``x-hplus-app-key`` metadata of every public patient-facing call. It says which app a call
comes from (attribution, each app's rate limit); it is not a user's credential: it ships
inside the app. Keys are checked against the control database at most once a second per
app, so a revocation takes effect on every node within about a second.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud import bearer
from cloud.accounts._errors import unauthenticated
from cloud.accounts._limits import Rate
from cloud.accounts._schema import APPS
from cloud.db import migrate
from cloud.partitions import reading

__all__ = ["APP_KEY_PREFIX", "App", "AppError", "AppStore", "Channel", "IssuedApp", "migrate_apps"]

APP_KEY_PREFIX = "hpk1"
"""Prefix of app keys."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "control"


class Channel(enum.StrEnum):
    """Where a patient app runs."""

    MINI_PROGRAM = "mini-program"
    """A mini-program inside a super-app (WeChat, Alipay)."""
    HOSPITAL_APP = "hospital-app"
    """A hospital's own mobile app."""
    WEB = "web"
    """A web site."""


class AppError(Exception):
    """An app cannot be issued or revoked; the message says why."""


@dataclasses.dataclass(frozen=True)
class App:
    """A patient app (never its secret)."""

    app_id: str
    """Public id (safe to log)."""
    name: str
    """Unique name, e.g. ``city-first-wechat``."""
    channel: Channel
    """Where it runs."""
    rate: Rate
    """Its calls' rate limit (over all its users)."""
    created_at: dt.datetime
    """When it was issued."""
    revoked_at: dt.datetime | None
    """When it was revoked, or ``None``."""


@dataclasses.dataclass(frozen=True)
class IssuedApp:
    """An app just issued; ``key`` is never stored and never shown again."""

    app: App
    """The app."""
    key: str = dataclasses.field(repr=False)
    """Its key, for the app's configuration."""


async def migrate_apps(engine: AsyncEngine) -> None:
    """Bring the apps table in the control database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_apps")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def _app(row: Any) -> App:
    created = _aware(row.created_at)
    assert created is not None
    return App(
        app_id=row.app_id,
        name=row.name,
        channel=Channel(row.channel),
        rate=Rate(int(row.burst), row.burst / row.rate),
        created_at=created,
        revoked_at=_aware(row.revoked_at),
    )


class AppStore:
    """Issues, lists, revokes and checks app keys (the control database's ``apps``).

    Args:
        control: the control database (migrated with `migrate_apps`).
        cache_seconds: how long a checked app is trusted without reading it again.
        max_cached: apps kept in the cache (least recently used dropped).
    """

    def __init__(
        self, control: AsyncEngine, *, cache_seconds: float = 1.0, max_cached: int = 10_000
    ) -> None:
        self._engine = control
        self._ttl = cache_seconds
        self._max = max_cached
        self._cache: OrderedDict[str, tuple[float, App, str]] = OrderedDict()

    async def issue(self, name: str, channel: Channel, rate: Rate) -> IssuedApp:
        """Issue a new app and its key.

        Raises:
            AppError: the name is malformed or taken.
        """
        if not _NAME.match(name):
            raise AppError(
                f"invalid app name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting "
                "with a letter or digit"
            )
        minted = bearer.mint(APP_KEY_PREFIX)
        now = dt.datetime.now(dt.UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    APPS.insert().values(
                        app_id=minted.token_id,
                        name=name,
                        channel=channel.value,
                        secret_sha256=minted.secret_sha256,
                        rate=rate.refill,
                        burst=rate.burst,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise AppError(f"an app named {name!r} exists") from None
        app = App(minted.token_id, name, channel, rate, now, None)
        return IssuedApp(app, minted.token)

    async def list(self) -> list[App]:
        """Every app, newest first."""
        async with reading(self._engine) as conn:
            rows = await conn.execute(
                sa.select(APPS).order_by(APPS.c.created_at.desc(), APPS.c.app_id)
            )
            return [_app(r) for r in rows]

    async def revoke(self, app_id: str) -> App:
        """Revoke an app: its key is refused everywhere within about a second.

        Raises:
            AppError: no app has that id.
        """
        async with self._engine.begin() as conn:
            await conn.execute(
                APPS.update()
                .where(APPS.c.app_id == app_id, APPS.c.revoked_at.is_(None))
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
            row = (await conn.execute(sa.select(APPS).where(APPS.c.app_id == app_id))).first()
        if row is None:
            raise AppError(f"no app with id {app_id!r}")
        self._cache.pop(app_id, None)
        return _app(row)

    async def authenticate(self, key: str | None) -> App:
        """The app whose valid, unrevoked key this is.

        Raises:
            mesh.errors.Unauthenticated: APP_KEY_MISSING, APP_KEY_INVALID or APP_KEY_REVOKED.
        """
        if not key:
            raise unauthenticated(
                "APP_KEY_MISSING", "an app key is required (metadata x-hplus-app-key)"
            )
        parsed = bearer.parse(key, APP_KEY_PREFIX)
        if parsed is None or len(key) > 200:
            raise unauthenticated("APP_KEY_INVALID", "the app key is not valid")
        app_id, secret = parsed
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached is not None and now - cached[0] < self._ttl:
            self._cache.move_to_end(app_id)
            _, app, digest = cached
        else:
            async with reading(self._engine) as conn:
                row = (await conn.execute(sa.select(APPS).where(APPS.c.app_id == app_id))).first()
            if row is None:
                raise unauthenticated("APP_KEY_INVALID", "the app key is not valid")
            app, digest = _app(row), row.secret_sha256
            self._cache[app_id] = (now, app, digest)
            self._cache.move_to_end(app_id)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        if not bearer.secret_matches(digest, secret):
            raise unauthenticated("APP_KEY_INVALID", "the app key is not valid")
        if app.revoked_at is not None:
            raise unauthenticated("APP_KEY_REVOKED", "the app key was revoked")
        return app
