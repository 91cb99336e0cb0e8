from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.accounts._apps import migrate_apps
from cloud.accounts._schema import ACCOUNTS, PARTITIONED
from cloud.accounts._schema import CONTROL as APPS_CONTROL
from cloud.partitioned import SCHEMAS
from cloud.partitions import (
    PartitionError,
    PartitionMoving,
    PartitionSet,
    PartitionState,
    migrate_partition,
    open_partition_engine,
    unfence,
    writing,
)
from cloud.partitions._schema import CONTROL, FENCE, PARTITION_INFRA


def first(urls: dict[str, str]) -> dict[str, str]:
    return {"south": urls["south"], "north": urls["north"]}


async def open_set(urls: dict[str, str], **kwargs: float) -> PartitionSet:
    return await PartitionSet.open(
        urls["control"], first_urls=first(urls), schemas=SCHEMAS, **kwargs
    )


def insert(account_id: str, region: str, phone: str):  # type: ignore[no-untyped-def]
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            ACCOUNTS.insert().values(
                account_id=account_id,
                region=region,
                phone=phone,
                app_id="test",
                created_at=dt.datetime.now(dt.UTC),
            )
        )

    return work


async def phones_of(parts: PartitionSet, region: str) -> list[str]:
    async def work(conn: AsyncConnection) -> list[str]:
        rows = await conn.execute(
            sa.select(ACCOUNTS.c.phone)
            .where(ACCOUNTS.c.region == region)
            .order_by(ACCOUNTS.c.phone)
        )
        return list(rows.scalars())

    return await parts.read(region, work)


def _diff(metadata: sa.MetaData, version_table: str):  # type: ignore[no-untyped-def]
    def run(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": version_table}
        )
        return [
            d
            for d in compare_metadata(ctx, metadata)
            # Several environments share these databases: only this one's tables count.
            if not (d[0] == "remove_table" and d[1].name not in metadata.tables)
            and not (d[0] == "remove_index" and d[1].table.name not in metadata.tables)
        ]

    return run


async def test_migrations_match_the_schemas_and_are_repeatable(urls: dict[str, str]) -> None:
    parts = await open_set(urls)
    await migrate_apps(parts.control)
    await parts.close()
    parts = await open_set(urls)  # a second start is a no-op
    await migrate_apps(parts.control)
    try:
        async with parts.control.connect() as conn:
            assert await conn.run_sync(_diff(CONTROL, "alembic_version_partitions")) == []
            assert await conn.run_sync(_diff(APPS_CONTROL, "alembic_version_apps")) == []
        engine = await parts.engine(parts.partition_of("44"))
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff(PARTITION_INFRA, "alembic_version_partition")) == []
            assert await conn.run_sync(_diff(PARTITIONED, "alembic_version_accounts")) == []
    finally:
        await parts.close()


async def test_the_first_start_makes_the_map_and_later_ones_read_it(urls: dict[str, str]) -> None:
    a = await open_set(urls)
    b = await open_set(urls)  # a second node
    try:
        assert a.map == b.map
        assert a.map.version == 1
        assert [p.name for p in a.map.active] == ["north", "south"]
        assert a.partition_of("44").name == "south"
        assert a.partition_of("11").name == "north"
        with pytest.raises(KeyError):
            a.partition_of("99")
    finally:
        await a.close()
        await b.close()


async def test_a_database_stamped_by_another_partition_is_refused(urls: dict[str, str]) -> None:
    engine = open_partition_engine(urls["south"])
    try:
        await migrate_partition(engine, "north", SCHEMAS)  # someone pointed north here
    finally:
        await engine.dispose()
    with pytest.raises(PartitionError, match="stamped as partition north"):
        await open_set(urls)


async def test_records_are_routed_by_region(urls: dict[str, str]) -> None:
    async with await open_set(urls) as parts:
        await parts.write("44", insert("44-0000000000000001", "44", "+8613800000001"))
        await parts.write("11", insert("11-0000000000000002", "11", "+8613800000002"))
        assert await phones_of(parts, "44") == ["+8613800000001"]
        assert await phones_of(parts, "11") == ["+8613800000002"]
        # Each row is in its region's partition's database only.
        for name, expected in (("south", 1), ("north", 1)):
            engine = await parts.engine(parts.map.partitions[name])
            async with engine.connect() as conn:
                count = (
                    await conn.execute(sa.select(sa.func.count()).select_from(ACCOUNTS))
                ).scalar()
            assert count == expected


async def fence(engine: AsyncEngine, on: bool) -> None:
    async with writing(engine) as conn:
        await conn.execute(FENCE.update().values(fenced=on))


async def test_a_fenced_partition_refuses_writes_until_the_map_moves(urls: dict[str, str]) -> None:
    async with await open_set(urls, fence_wait=0.5) as parts:
        south = await parts.engine(parts.partition_of("44"))
        await fence(south, True)
        started = time.monotonic()
        with pytest.raises(PartitionMoving) as info:
            await parts.write("44", insert("44-0000000000000001", "44", "+8613800000001"))
        assert time.monotonic() - started >= 0.5
        assert info.value.reason == "PARTITION_MOVING"
        assert info.value.retry_delay == 1.0
        # Reads go on while the map has not moved: nothing can have changed since the fence.
        assert await phones_of(parts, "44") == []
        # Writes to the other partition are untouched.
        await parts.write("11", insert("11-0000000000000002", "11", "+8613800000002"))
        # Lifting the fence bumps the map: a waiting write goes through at once.
        waiting = asyncio.create_task(
            parts.write("44", insert("44-0000000000000003", "44", "+8613800000003"))
        )
        assert await unfence(urls["control"], "south") is True
        await asyncio.wait_for(waiting, 5)
        assert await phones_of(parts, "44") == ["+8613800000003"]
        assert parts.map.version == 2
        assert await unfence(urls["control"], "south") is False
        with pytest.raises(PartitionError, match="no active partition 'nowhere'"):
            await unfence(urls["control"], "nowhere")
        assert parts.map.partitions["south"].state is PartitionState.ACTIVE
