from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.databases import postgres_databases, sqlite_databases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Database URLs by name (control, south, north, east, west): SQLite files, then
    (integration) fresh PostgreSQL databases."""
    if request.param == "sqlite":
        yield sqlite_databases(tmp_path)
    else:
        async with postgres_databases(request.getfixturevalue("postgres_url")) as made:
            yield made
