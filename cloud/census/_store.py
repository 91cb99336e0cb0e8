"""Persisting census counts so every node's sampling adds up in one place."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.census._census import CensusRow, FieldCensus
from cloud.census._schema import CENSUS, CENSUS_META
from cloud.db import migrate
from hplus.cloud.v1 import registry_pb2

__all__ = ["CensusFlusher", "CensusStore", "census_answer", "migrate_census"]

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_census(engine: AsyncEngine) -> None:
    """Bring the census tables to the newest schema (own version table)."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_census")


async def _add(
    conn: AsyncConnection,
    table: sa.Table,
    keys: dict[str, str],
    column: str,
    amount: int,
    stamp: dict[str, dt.datetime],
) -> None:
    # Portable upsert: increment, and insert when nothing was there. Two nodes racing on
    # a new key both try the insert; the loser retries the increment.
    where = [table.c[k] == v for k, v in keys.items()]
    updated = await conn.execute(
        table.update().where(*where).values({column: table.c[column] + amount})
    )
    if updated.rowcount:
        return
    try:
        async with conn.begin_nested():
            await conn.execute(table.insert().values(**keys, **{column: amount}, **stamp))
    except sa.exc.IntegrityError:
        await conn.execute(table.update().where(*where).values({column: table.c[column] + amount}))


class CensusStore:
    """Adds a node's census counts to the shared tables and reads them back.

    Args:
        engine: the database holding the census tables (the registry's, migrated).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._flushed: dict[tuple[str, str, str, str], int] = {}
        self._flushed_sampled: dict[tuple[str, str, str], int] = {}

    async def flush(self, census: FieldCensus) -> int:
        """Drain ``census`` and add what it counted since the last flush.

        Returns:
            How many rows changed.
        """
        census.drain()
        now = dt.datetime.now(dt.UTC)
        changed = 0
        async with self._engine.begin() as conn:
            for row in census.rows():
                key = (row.rpc, row.direction, row.contract_release, row.field_path)
                delta = row.messages - self._flushed.get(key, 0)
                if delta:
                    keys = dict(
                        zip(
                            ("rpc", "direction", "contract_release", "field_path"), key, strict=True
                        )
                    )
                    await _add(conn, CENSUS, keys, "messages", delta, {"updated_at": now})
                    self._flushed[key] = row.messages
                    changed += 1
                skey = (row.rpc, row.direction, row.contract_release)
                sdelta = row.sampled - self._flushed_sampled.get(skey, 0)
                if sdelta:
                    keys = dict(zip(("rpc", "direction", "contract_release"), skey, strict=True))
                    await _add(conn, CENSUS_META, keys, "sampled", sdelta, {"first_at": now})
                    self._flushed_sampled[skey] = row.sampled
        return changed

    async def rows(
        self, *, rpc: str = "", contract_release: str = "", field_path: str = ""
    ) -> tuple[list[CensusRow], dt.datetime | None]:
        """Counted rows (summed over nodes), filtered, and when counting began."""
        query = (
            sa.select(
                CENSUS.c.rpc,
                CENSUS.c.direction,
                CENSUS.c.contract_release,
                CENSUS.c.field_path,
                CENSUS.c.messages,
                CENSUS_META.c.sampled,
            )
            .join(
                CENSUS_META,
                sa.and_(
                    CENSUS_META.c.rpc == CENSUS.c.rpc,
                    CENSUS_META.c.direction == CENSUS.c.direction,
                    CENSUS_META.c.contract_release == CENSUS.c.contract_release,
                ),
            )
            .order_by(
                CENSUS.c.rpc, CENSUS.c.direction, CENSUS.c.contract_release, CENSUS.c.field_path
            )
        )
        if rpc:
            query = query.where(CENSUS.c.rpc == rpc)
        if contract_release:
            query = query.where(CENSUS.c.contract_release == contract_release)
        if field_path:
            query = query.where(
                sa.or_(
                    CENSUS.c.field_path == field_path,
                    CENSUS.c.field_path.startswith(field_path + ".", autoescape=True),
                )
            )
        async with self._engine.connect() as conn:
            result = (await conn.execute(query)).all()
            since = (await conn.execute(sa.select(sa.func.min(CENSUS_META.c.first_at)))).scalar()
        rows = [
            CensusRow(
                rpc=r.rpc,
                direction=r.direction,
                contract_release=r.contract_release,
                field_path=r.field_path,
                messages=int(r.messages),
                sampled=int(r.sampled),
            )
            for r in result
        ]
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return rows, since


class CensusFlusher:
    """Periodically adds a node's census counts to the store; owns its task.

    Args:
        census: the node's census hook.
        store: where counts are added.
        interval: seconds between flushes.
    """

    def __init__(self, census: FieldCensus, store: CensusStore, *, interval: float) -> None:
        self.census = census
        self.store = store
        self._interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Flush every ``interval`` until `shutdown`, then once more."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
            try:
                await self.store.flush(self.census)
            except (OSError, sa.exc.SQLAlchemyError) as err:
                log.warning("census flush failed, keeping counts for the next one: %s", err)

    def start(self) -> None:
        """Start the flush loop in an owned task."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="census-flush")

    async def shutdown(self) -> None:
        """Stop the loop after a last flush."""
        self._stop.set()
        if self._task is not None:
            await self._task


def census_answer(
    store: CensusStore, *, rate: float
) -> Callable[[registry_pb2.GetFieldCensusRequest], Awaitable[registry_pb2.GetFieldCensusResponse]]:
    """The ``GetFieldCensus`` answer for the registry servicer, read from ``store``."""
    directions = {
        "request": registry_pb2.CENSUS_DIRECTION_REQUEST,
        "response": registry_pb2.CENSUS_DIRECTION_RESPONSE,
    }

    async def answer(
        request: registry_pb2.GetFieldCensusRequest,
    ) -> registry_pb2.GetFieldCensusResponse:
        rows, since = await store.rows(
            rpc=request.rpc,
            contract_release=request.contract_release,
            field_path=request.field_path,
        )
        reply = registry_pb2.GetFieldCensusResponse(
            entries=[
                registry_pb2.CensusEntry(
                    rpc=r.rpc,
                    direction=directions.get(
                        r.direction, registry_pb2.CENSUS_DIRECTION_UNSPECIFIED
                    ),
                    contract_release=r.contract_release,
                    field_path=r.field_path,
                    messages=r.messages,
                    sampled=r.sampled,
                )
                for r in rows
            ],
            sample_rate=rate,
        )
        if since is not None:
            reply.since_time.FromDatetime(since)
        return reply

    return answer
