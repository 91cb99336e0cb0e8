"""What lives in a partition's database, how its engine is opened, and how writes are fenced.

A part that keeps records in the business partitions (accounts now; orders and payments
next) describes its tables with a `PartitionSchema`: every table has a ``region`` column
(the GB/T 2260 province code that decides the partition) and a primary key, so a split can
copy a region's rows and replay what changed during the copy. The part's own Alembic
environment creates the tables in every partition database.

Transactions. A write runs in one transaction whose first statement checks the
partition's fence (`check_fence`): on PostgreSQL it takes a share lock on the fence row,
so the split's ``UPDATE`` that sets the fence waits for every write in flight and every
later write sees it; on SQLite the write transaction begins ``IMMEDIATE`` (the database's
one write lock), which orders it the same way against the fence. A fenced partition
refuses the write before anything was written, so the caller can run it again where the
map now says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.db import create_engine, migrate
from cloud.partitions._schema import FENCE

__all__ = [
    "READ_OPTION",
    "PartitionError",
    "PartitionSchema",
    "check_fence",
    "migrate_partition",
    "open_partition_engine",
    "reading",
    "writing",
]

READ_OPTION = "hplus_read_only"
"""Execution option of a connection whose transactions only read (SQLite: a plain ``BEGIN``;
every other transaction begins ``IMMEDIATE``)."""

_INFRA_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "partition"


class PartitionError(Exception):
    """A partition or the map cannot be used as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class PartitionSchema:
    """The tables one part keeps in every partition database, and their migrations.

    Raises:
        ValueError: a table has no ``region`` column or no primary key.
    """

    name: str
    """The part, e.g. ``accounts`` (for messages)."""
    metadata: sa.MetaData
    """Its tables, as the newest migration leaves them."""
    migrations: Path
    """Its Alembic environment."""
    version_table: str
    """The table that records its revision (one per environment in a shared database)."""

    def __post_init__(self) -> None:
        for table in self.metadata.sorted_tables:
            if "region" not in table.c or not table.primary_key.columns:
                raise ValueError(
                    f"{self.name}: table {table.name} needs a region column and a primary key "
                    "to live in a partition"
                )

    @property
    def tables(self) -> list[sa.Table]:
        """The tables in dependency order."""
        return list(self.metadata.sorted_tables)


def open_partition_engine(url: str) -> AsyncEngine:
    """An engine on a partition database (or the control database).

    SQLite gets real transactions: the driver's own implicit ``BEGIN`` (issued only before
    the first write, so a read-then-write is not atomic) is replaced by ours: ``BEGIN
    IMMEDIATE`` (the write lock first, so a transaction that reads then writes never fails
    on a snapshot another writer moved past), a plain ``BEGIN`` for `reading`; and WAL, so
    readers never wait for the writer.

    Raises:
        cloud.db.DatabaseError: the URL is malformed or names a database we do not run on.
    """
    engine = create_engine(url)
    if engine.url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    read = conn.get_execution_options().get(READ_OPTION, False)
    conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction on ``engine`` (SQLite: ``BEGIN IMMEDIATE``)."""
    async with engine.connect() as conn, conn.begin():
        yield conn


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction on ``engine`` (SQLite: a snapshot, taking no lock)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_OPTION: True})
        async with conn.begin():
            yield conn


async def check_fence(conn: AsyncConnection, *, write: bool) -> bool:
    """Whether the partition behind ``conn`` is fenced, checked inside its transaction.

    For a write, on PostgreSQL, the fence row is share-locked until the transaction ends,
    so a fence cannot be set while the write is in flight.

    Args:
        conn: a connection inside a transaction (`writing` or `reading`).
        write: whether the transaction writes.

    Returns:
        True when fenced.
    """
    query = sa.select(FENCE.c.fenced).where(FENCE.c.id == 1)
    if write and conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    fenced = (await conn.execute(query)).scalar_one_or_none()
    return bool(fenced)


async def migrate_partition(
    engine: AsyncEngine, name: str, schemas: tuple[PartitionSchema, ...]
) -> None:
    """Bring a partition database to the newest schema and check whose database it is.

    The first migration stamps the database with ``name``; a database stamped with another
    partition's name is refused (two partitions must never share a database).

    Raises:
        PartitionError: the database belongs to another partition.
        cloud.db.DatabaseError: the database cannot be reached.
    """
    await migrate(engine, _INFRA_MIGRATIONS, version_table="alembic_version_partition")
    async with engine.begin() as conn:
        owner = (
            await conn.execute(sa.select(FENCE.c.partition).where(FENCE.c.id == 1))
        ).scalar_one_or_none()
        if owner is None:
            await conn.execute(FENCE.insert().values(id=1, partition=name, fenced=False))
        elif owner != name:
            raise PartitionError(
                f"the database of partition {name} is stamped as partition {owner}'s: "
                "two partitions cannot share a database"
            )
    for schema in schemas:
        await migrate(engine, schema.migrations, version_table=schema.version_table)
