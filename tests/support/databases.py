"""Whole PostgreSQL databases for tests that need several (partitions, control)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

NAMES = ("control", "south", "north", "east", "west")


@asynccontextmanager
async def postgres_databases(
    postgres_url: str, names: tuple[str, ...] = NAMES
) -> AsyncIterator[dict[str, str]]:
    """``CREATE DATABASE`` one fresh database per name (unique names), dropped afterwards."""
    admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    made = {name: f"hplus_t_{uuid.uuid4().hex[:12]}_{name}" for name in names}
    base = make_url(postgres_url)
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
