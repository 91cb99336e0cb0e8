"""Reconciliation runs in the control database: the migration, and a stored run read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

import cloud.payments
import cloud.reconcile
import tools.pay_sim
from cloud.payments import CST, StatementRow
from cloud.reconcile import (
    DiscrepancyKind,
    PlatformPayment,
    PlatformState,
    Reconciler,
    Resolution,
    migrate_reconcile,
)
from cloud.reconcile._schema import RECONCILE
from mesh import errors

DAY = dt.date(2026, 12, 5)
AT = dt.datetime(2026, 12, 5, 9, 0, tzinfo=CST)


async def test_migration_matches_the_schema_and_is_repeatable(db_engine: AsyncEngine) -> None:
    await migrate_reconcile(db_engine)
    await migrate_reconcile(db_engine)

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "alembic_version_reconcile"}
        )
        return compare_metadata(ctx, RECONCILE), inspect(conn).get_table_names()

    async with db_engine.connect() as conn:
        changes, tables = await conn.run_sync(diff)
    assert changes == []
    assert "alembic_version_reconcile" in tables


class Statement:
    """A channel that only has a statement (the `PaymentChannel` seam is ours)."""

    async def statement(self, business_date: dt.date) -> Sequence[StatementRow]:
        return [
            StatementRow(business_date, "payment", "ORD1", "tx1", 4900, occurred_at=AT),
            StatementRow(business_date, "payment", "ORD9", "tx9", 100, occurred_at=AT),
        ]


class Platform:
    async def payments_for(
        self, business_date: dt.date, hospital_id: str | None
    ) -> Sequence[PlatformPayment]:
        return [PlatformPayment("o-1", "h1", "ORD1", 4800, PlatformState.CONFIRMED, paid_at=AT)]


class RefusingSink:
    async def apply(self, resolution: Resolution) -> None:
        raise RuntimeError("not now")


async def offline(hospital_id: str) -> grpc.aio.Channel:
    raise errors.Unavailable(f"hospital {hospital_id} is not connected")


async def hospitals() -> list[str]:
    return ["h1"]


async def test_a_run_is_stored_with_every_discrepancy(db_engine: AsyncEngine) -> None:
    await migrate_reconcile(db_engine)
    reconciler = Reconciler(
        db_engine,
        channel=Statement(),  # type: ignore[arg-type]
        channel_for=offline,
        hospitals=hospitals,
        platform=Platform,
        resolutions=RefusingSink,
    )
    report = await reconciler.run(DAY)
    assert [(d.kind, d.out_trade_no) for d in report.discrepancies] == [
        (DiscrepancyKind.MISSING_AT_PLATFORM, "ORD9"),
        (DiscrepancyKind.AMOUNT_MISMATCH, "ORD1"),
    ]
    (ledger,) = report.hospitals
    assert not ledger.read
    assert "UNAVAILABLE" in ledger.error
    stored = await reconciler.stored(report.run_id)
    assert [(d.kind, d.out_trade_no, d.platform_fen, d.channel_fen) for d in stored] == [
        (d.kind, d.out_trade_no, d.platform_fen, d.channel_fen) for d in report.discrepancies
    ]
    # A second run is a second record: evidence is never rewritten.
    again = await reconciler.run(DAY)
    assert again.run_id != report.run_id
    assert len(await reconciler.stored(report.run_id)) == 2


async def test_no_channel_is_a_failed_precondition(db_engine: AsyncEngine) -> None:
    await migrate_reconcile(db_engine)
    reconciler = Reconciler(db_engine, channel=None, channel_for=offline, hospitals=hospitals)
    with pytest.raises(errors.FailedPrecondition):
        await reconciler.run(DAY)


def test_public_surfaces_are_pinned() -> None:
    assert cloud.reconcile.__all__ == [
        "ChannelFor",
        "Discrepancy",
        "DiscrepancyKind",
        "HospitalEntry",
        "HospitalLedger",
        "PlatformLedger",
        "PlatformPayment",
        "PlatformState",
        "Reconciler",
        "Report",
        "Resolution",
        "ResolutionSink",
        "compare",
        "migrate_reconcile",
        "next_run",
        "read_ledger",
        "to_proto",
    ]
    # The seam the order coordinator codes against stays as it was published.
    assert {
        "PaymentChannel",
        "PaymentEvidence",
        "PaymentListener",
        "Prepay",
        "RefundEvidence",
        "RefundState",
        "StatementRow",
        "TradeState",
    } <= set(cloud.payments.__all__)
    assert "PaySim" in tools.pay_sim.__all__
