"""Async SQLAlchemy engines and schema migration through Alembic.

Every cloud database (fleet, registry, partitions) is reached through SQLAlchemy 2's
``AsyncEngine``: SQLite files under the data directory by default (``aiosqlite``),
PostgreSQL by URL in production (``asyncpg``). Each database's schema is owned by an Alembic
migration environment inside the package that owns the tables; ``migrate`` brings a
database to the newest revision when a node starts, so an embedded node needs no extra step.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mesh.files import ensure_private_file, make_private_dir, sqlite_files, tighten

__all__ = [
    "DatabaseError",
    "create_engine",
    "metadata",
    "migrate",
    "run_migration_env",
    "sqlite_url",
    "writer_turn",
]


class DatabaseError(Exception):
    """A database URL is malformed, its driver is missing, or the server cannot be reached."""


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file used through ``aiosqlite``."""
    return f"sqlite+aiosqlite:///{path}"


_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
"""The databases we run on, each with the async driver we use."""


def _async_url(url: str) -> URL:
    """``url`` with our async driver.

    A plain ``postgresql://…`` becomes ``postgresql+asyncpg://…`` and ``sqlite:///…``
    becomes ``sqlite+aiosqlite:///…``.

    Raises:
        DatabaseError: the URL is malformed, names another database, or names a driver
            that is not the async one (one line, password hidden).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise DatabaseError(f"bad database URL {_redact(url)!r}: {err}") from None
    backend, _, driver = parsed.drivername.partition("+")
    wanted = _ASYNC_DRIVERS.get(backend)
    supported = " or ".join(f"{b}://… ({b}+{d})" for b, d in _ASYNC_DRIVERS.items())
    if wanted is None:
        raise DatabaseError(
            f"bad database URL {_redact(url)!r}: {backend} is not supported; use {supported}"
        )
    if driver and driver != wanted:
        raise DatabaseError(
            f"bad database URL {_redact(url)!r}: driver {driver} is not async; "
            f"use {backend}+{wanted}://… or plain {backend}://…"
        )
    return parsed.set(drivername=f"{backend}+{wanted}")


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine for ``url``; a plain URL gets our async driver.

    SQLite gets a busy timeout so that a CLI command and a running node can share a file.

    Raises:
        DatabaseError: the URL is malformed, names a database or driver we do not run on,
            or names a driver that is not installed.
    """
    parsed = _async_url(url)
    try:
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        return create_async_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise DatabaseError(f"bad database URL {_redact(url)!r}: {err}") from None


class _AnyTurn:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def writer_turn(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[None]:
    """A turn to write through ``engine``, to hold around each write transaction.

    SQLite has one writer at a time, and writers queued inside SQLite wait in its busy
    handler, which sleeps in steps of up to 100 ms: under load they wait far longer than
    the writes take. For SQLite this is a lock, so this process's writers queue here in
    arrival order instead; for other databases it is a no-op. Keep one per engine.
    """
    if engine.url.get_backend_name() == "sqlite":
        return asyncio.Lock()
    return _AnyTurn()


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable>"


def migrate(engine: AsyncEngine, script_location: Path, *, version_table: str) -> Any:
    """Return a coroutine that upgrades the database behind ``engine`` to the newest revision.

    Args:
        engine: the database to migrate.
        script_location: the Alembic environment (folder with ``env.py`` and ``versions/``).
        version_table: the table recording the revision; one per migration environment, so
            several environments can share one PostgreSQL database.

    Raises:
        DatabaseError: the database cannot be reached.
    """

    def upgrade(conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(script_location))
        cfg.attributes["connection"] = conn
        cfg.attributes["version_table"] = version_table
        command.upgrade(cfg, "head")

    async def run() -> None:
        if engine.url.get_backend_name() == "sqlite" and engine.url.database:
            _private_sqlite_file(Path(engine.url.database))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(upgrade)
        except (OperationalError, OSError) as err:
            raise DatabaseError(
                f"cannot reach database {_redact(str(engine.url))}: {err}"
            ) from None

    return run()


def _private_sqlite_file(path: Path) -> None:
    """Create a SQLite database file mode 0600 (its directory 0700 if missing), or tighten it.

    SQLite gives the ``-wal`` and ``-journal`` files the database file's mode, so they are
    private too. The databases hold credentials' hashes and sampled traffic.
    """
    if not path.parent.exists():
        make_private_dir(path.parent)
    ensure_private_file(path)
    tighten(sqlite_files(path))


# Constraint names that are the same on SQLite and PostgreSQL, so migrations can name them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def metadata() -> sa.MetaData:
    """A ``MetaData`` with our constraint naming convention."""
    return sa.MetaData(naming_convention=NAMING)


def run_migration_env(target: sa.MetaData) -> None:
    """The body of every ``migrations/env.py``: run on the connection `migrate` passes in.

    Args:
        target: the tables the environment's migrations build (for autogenerate).
    """
    from alembic import context

    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=target,
        version_table=context.config.attributes.get("version_table", "alembic_version"),
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()
