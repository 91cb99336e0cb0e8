"""Orders in real partitions (SQLite files; PostgreSQL databases under integration): the
schema is the migration's, every change is guarded by the row's version and written with
its history, and the reconciliation's query finds the payments of a business day (UTC+8)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cloud.orders import Conflict, OrderStore, Step, key_for
from cloud.orders._schema import PARTITIONED
from cloud.partitioned import SCHEMAS
from cloud.partitions import PartitionSet
from tests.support.databases import postgres_databases, sqlite_databases

T0 = dt.datetime(2026, 12, 5, 15, 30, tzinfo=dt.UTC)  # 23:30 on the 5th in UTC+8


@asynccontextmanager
async def partitions(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[PartitionSet]:
    if kind == "sqlite":
        urls = sqlite_databases(tmp_path)
        parts = await PartitionSet.open(
            urls["control"],
            first_urls={"south": urls["south"], "north": urls["north"]},
            schemas=SCHEMAS,
        )
        try:
            yield parts
        finally:
            await parts.close()
        return
    async with postgres_databases(request.getfixturevalue("postgres_url")) as urls:
        parts = await PartitionSet.open(
            urls["control"],
            first_urls={"south": urls["south"], "north": urls["north"]},
            schemas=SCHEMAS,
        )
        try:
            yield parts
        finally:
            await parts.close()


KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


def values(order_id: str, hospital: str = "h-1", **more: Any) -> dict[str, Any]:
    region = order_id[:2]
    return {
        "order_id": order_id,
        "region": region,
        "account_id": f"{region}-acc",
        "app_id": "app",
        "request_id": f"req-{order_id}",
        "hospital_id": hospital,
        "slot_id": "SL1",
        "patient_id": "p",
        "hospital_patient_id": "P1",
        "patient": b"",
        "step": Step.HOLDING.value,
        "unknown": False,
        "review": False,
        "in_flight": False,
        "step_key": key_for(order_id, Step.HOLDING),
        "appointment": b"",
        "created_at": T0,
        "updated_at": T0,
        "status_changed_at": T0,
        "version": 1,
        **more,
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_the_migration_is_the_schema(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with partitions(kind, tmp_path, request) as parts:
        engine = await parts.engine(parts.partition_of("44"))

        def diff(conn):  # type: ignore[no-untyped-def]
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "version_table": "alembic_version_orders",
                    "include_name": lambda name, kind, _: (
                        kind != "table" or name in PARTITIONED.tables
                    ),
                },
            )
            return compare_metadata(ctx, PARTITIONED), inspect(conn).get_table_names()

        async with engine.connect() as conn:
            changes, tables = await conn.run_sync(diff)
        assert changes == []
        assert {"orders", "order_history", "order_requests"} <= set(tables)


@pytest.mark.parametrize("kind", KINDS)
async def test_changes_are_versioned_and_written_with_their_history(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with partitions(kind, tmp_path, request) as parts:
        store = OrderStore(parts, node_id="n1")
        row = await store.create(
            values("44-00000000000000a1"),
            method="BookAppointment",
            digest="d",
            history=[("created", "made")],
        )
        moved = await store.update(row, {"step": Step.AWAITING_PAYMENT}, [("transition", "held")])
        assert moved.version == 2
        assert moved.step is Step.AWAITING_PAYMENT
        with pytest.raises(Conflict):
            await store.update(row, {"step": Step.FAILED}, [("transition", "stale")])
        history = await store.history(row.order_id)
        assert [(h.seq, h.kind, h.step_from, h.step_to) for h in history] == [
            (1, "created", "holding", "holding"),
            (2, "transition", "holding", "awaiting_payment"),
        ]
        assert all(h.node == "n1" for h in history)
        assert (await store.get(row.order_id)).step is Step.AWAITING_PAYMENT  # type: ignore[union-attr]
        assert await store.get("not-an-order") is None
        assert await store.get("99-00000000000000a1") is None
        recorded = await store.request("44", "44-acc", "req-44-00000000000000a1")
        assert recorded.order_id == row.order_id


@pytest.mark.parametrize("kind", KINDS)
async def test_payments_of_a_business_day_in_utc_plus_8(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with partitions(kind, tmp_path, request) as parts:
        store = OrderStore(parts)
        paid = {
            "44-00000000000000b1": ("h-1", T0),  # 23:30 on the 5th (UTC+8)
            "11-00000000000000b2": ("h-2", T0 + dt.timedelta(minutes=20)),  # 23:50 on the 5th
            "44-00000000000000b3": ("h-1", T0 + dt.timedelta(minutes=40)),  # 00:10 on the 6th
        }
        for order_id, (hospital, at) in paid.items():
            await store.create(
                values(
                    order_id,
                    hospital,
                    step=Step.CONFIRMED.value,
                    paid_at=at,
                    paid_fen=1000,
                    out_trade_no=f"{order_id}-p1",
                    receipt_number=f"SJ{order_id[-2:]}",
                ),
                method="BookAppointment",
                digest="d",
                history=[],
            )
        await store.create(
            values("44-00000000000000b4"), method="BookAppointment", digest="d", history=[]
        )  # never paid
        day5 = await store.payments_for(dt.date(2026, 12, 5), None)
        assert [p.order_id for p in day5] == ["44-00000000000000b1", "11-00000000000000b2"]
        assert day5[0].amount_fen == 1000
        assert day5[0].hospital_charge_id == "SJb1"
        assert day5[0].out_trade_no == "44-00000000000000b1-p1"
        assert [p.order_id for p in await store.payments_for(dt.date(2026, 12, 5), "h-2")] == [
            "11-00000000000000b2"
        ]
        assert [p.order_id for p in await store.payments_for(dt.date(2026, 12, 6), None)] == [
            "44-00000000000000b3"
        ]
        due = await store.due(T0 + dt.timedelta(days=1))
        assert [r.order_id for r in due] == ["44-00000000000000b4"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_time_in_the_channels_zone_is_kept_as_the_same_instant(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The channel says when the money was taken in UTC+8; SQLite keeps a column's wall time
    # and drops its offset, so the store writes every time in UTC.
    cst = dt.timezone(dt.timedelta(hours=8))
    async with partitions(kind, tmp_path, request) as parts:
        store = OrderStore(parts)
        created = await store.create(
            values("44-00000000000000c1"), method="BookAppointment", digest="d", history=[]
        )
        paid_at = dt.datetime(2026, 12, 6, 0, 10, tzinfo=cst)  # 16:10 on the 5th, UTC
        await store.update(created, {"paid_at": paid_at, "paid_fen": 500}, [("payment", "paid")])
        row = await store.get("44-00000000000000c1")
        assert row is not None
        assert row.paid_at == paid_at
        day6 = await store.payments_for(dt.date(2026, 12, 6), None)
        assert [p.order_id for p in day6] == ["44-00000000000000c1"]
        assert not await store.payments_for(dt.date(2026, 12, 5), None)
