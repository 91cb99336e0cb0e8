"""Database URLs: the plain forms get our async driver; anything else is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cloud.db import DatabaseError, create_engine


async def test_a_plain_sqlite_url_gets_aiosqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        assert engine.url.drivername == "sqlite+aiosqlite"
        async with engine.begin() as conn:
            assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()
    assert (tmp_path / "fleet.db").exists()


@pytest.mark.integration
async def test_a_plain_postgresql_url_gets_asyncpg(postgres_url: str) -> None:
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    assert plain.startswith("postgresql://")
    engine = create_engine(plain)
    try:
        assert engine.url.drivername == "postgresql+asyncpg"
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("select 1"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:hunter2@db/fleet", "mysql is not supported; use postgresql://"),
        ("postgres://u:hunter2@db/fleet", "postgres is not supported; use postgresql://"),
        (
            "postgresql+psycopg2://u:hunter2@db/fleet",
            "driver psycopg2 is not async; use postgresql+asyncpg://… or plain postgresql://…",
        ),
        ("sqlite+pysqlite:///x.db", "driver pysqlite is not async"),
        ("not a url", "bad database URL"),
    ],
)
def test_other_urls_are_refused_in_one_line(url: str, says: str) -> None:
    with pytest.raises(DatabaseError) as info:
        create_engine(url)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert "hunter2" not in message
