"""A database connection lost during a statement is UNAVAILABLE (retry), never INTERNAL.

Found by the chaos run: after ``pg_terminate_backend`` of the node's connections, a
GetOrder that was using one answered INTERNAL; an app retries UNAVAILABLE only.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cloud.db import create_engine
from cloud.errors import translate
from mesh import errors


@pytest.mark.integration
async def test_a_connection_terminated_mid_statement_is_unavailable(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    admin = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with admin.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as lost:
                await conn.execute(text("SELECT 1"))
        mapped = translate(lost.value)
        assert isinstance(mapped, errors.Unavailable)
        assert mapped.reason == "DATABASE_UNAVAILABLE"
        assert "terminat" not in str(mapped)  # the driver's text stays in the log
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_other_errors_are_still_bugs() -> None:
    assert translate(ValueError("x")) is None


async def test_a_database_that_refuses_connections_is_unavailable() -> None:
    # Found by the attribution fault set: a partition database cut off answered INTERNAL
    # (asyncpg raises the bare ConnectionRefusedError while the pool connects).
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        with pytest.raises(ConnectionRefusedError) as refused:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        mapped = translate(refused.value)
        assert isinstance(mapped, errors.Unavailable)
        assert mapped.reason == "DATABASE_UNAVAILABLE"
    finally:
        await engine.dispose()
    # The same error from anywhere else is not the database's.
    assert translate(ConnectionRefusedError(111, "refused")) is None
