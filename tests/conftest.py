"""Shared fixtures.

Integration tests need PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379). On a machine without them they are skipped with a reason; under CI
(``CI=true``) a missing service fails the test instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _require(name: str, host: str, port: int) -> None:
    if _answers(host, port):
        return
    message = f"{name} does not answer on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run integration tests)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the local PostgreSQL test database."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get(
        "HPLUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis server."""
    _require("Redis", "127.0.0.1", 6379)
    return os.environ.get("HPLUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@asynccontextmanager
async def pg_schema_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An AsyncEngine on the test PostgreSQL, confined to a fresh schema dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        postgres_url, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh, empty database: a SQLite file, then (integration) a PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        yield engine
        await engine.dispose()
    else:
        async with pg_schema_engine(request.getfixturevalue("postgres_url")) as engine:
            yield engine
