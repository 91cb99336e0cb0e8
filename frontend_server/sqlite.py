"""The edge's local SQLite stores: one engine per file, set up for durability.

The ledger and the task queue each keep a SQLite file. Both must survive the process being
killed at any instant, so every commit is synchronous (``synchronous=FULL``) in WAL mode,
and writers wait for each other (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

__all__ = ["sqlite_engine"]


def sqlite_engine(path: Path | str) -> AsyncEngine:
    """An async engine on the SQLite file ``path`` (``":memory:"`` for a private database).

    One pooled connection: SQLite serialises writers anyway, and a single connection means
    the coroutines of one process queue for it instead of contending for the file lock.
    """
    memory = str(path) == ":memory:"
    if memory:
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    else:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{Path(path)}",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
        )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
