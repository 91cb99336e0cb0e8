"""Scratch databases for tests and benchmarks: fresh PostgreSQL databases, or SQLite files.

One way to make them (tests, ``bench.accounts``, ``bench.fleet_sync``, ``bench.orders``,
``bench.chaos``): ``postgres_databases`` creates one database per name with a unique name
and drops it afterwards (``WITH (FORCE)``, so a run killed mid-way leaves nothing a later
run trips on), ``sqlite_databases`` names one file per name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["DEFAULT_POSTGRES", "NAMES", "postgres_databases", "sqlite_databases"]

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
"""The admin URL benchmarks default to (this project's machines: trust on loopback)."""

NAMES = ("control", "south", "north", "east", "west")
"""The node's control database and the partitions tests split into."""


@asynccontextmanager
async def postgres_databases(
    admin_url: str, names: tuple[str, ...] = NAMES, *, prefix: str = "hplus_t"
) -> AsyncIterator[dict[str, str]]:
    """``CREATE DATABASE`` one fresh database per name (unique names), dropped afterwards.

    Args:
        admin_url: a URL whose user may create databases (its database is only connected to).
        names: what the caller calls them; the mapping yielded is name → URL.
        prefix: the start of each database's real name (``<prefix>_<random>_<name>``).
    """
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    made = {name: f"{prefix}_{uuid.uuid4().hex[:12]}_{name}" for name in names}
    base = make_url(admin_url)
    try:
        async with admin.connect() as conn:
            for database in made.values():
                await conn.execute(text(f'CREATE DATABASE "{database}"'))
        yield {
            name: base.set(database=database).render_as_string(hide_password=False)
            for name, database in made.items()
        }
    finally:
        async with admin.connect() as conn:
            for database in made.values():
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        await admin.dispose()


def sqlite_databases(directory: Path, names: tuple[str, ...] = NAMES) -> dict[str, str]:
    """One SQLite file per name under ``directory``."""
    return {name: f"sqlite+aiosqlite:///{directory / f'{name}.db'}" for name in names}
