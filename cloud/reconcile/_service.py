"""`Reconciler`: runs a reconciliation (sources → comparison → stored run), on demand or daily."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.payments import CST, PaymentChannel, StatementRow
from cloud.reconcile._compare import compare
from cloud.reconcile._hospital import ChannelFor, read_ledger
from cloud.reconcile._model import (
    Discrepancy,
    DiscrepancyKind,
    HospitalLedger,
    PlatformLedger,
    PlatformPayment,
    Report,
    Resolution,
    ResolutionSink,
)
from cloud.reconcile._schema import DISCREPANCIES, RUNS
from hplus.cloud.v1 import operations_pb2
from mesh import errors

__all__ = ["Reconciler", "migrate_reconcile", "next_run", "to_proto"]

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_reconcile(engine: AsyncEngine) -> None:
    """Bring the reconciliation tables in the control database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_reconcile")


def next_run(now: dt.datetime, at: tuple[int, int]) -> dt.datetime:
    """The next daily run at ``at`` (hour, minute) UTC+8 strictly after ``now``."""
    local = now.astimezone(CST)
    run = local.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    if run <= local:
        run += dt.timedelta(days=1)
    return run


class Reconciler:
    """Reads the three sources of a business date, compares them, stores and returns the run.

    Args:
        control: the control database (migrated with `migrate_reconcile`).
        channel: the payment channel (its statement).
        channel_for: reaches a hospital's edge.
        hospitals: every hospital the platform serves (asked for its ledger when no
            hospital filter is given).
        platform: the platform's ledger, read at each run (None while not wired).
        resolutions: where exact resolutions go, read at each run (None: only reported).
        hospital_timeout: deadline of one ledger page.
    """

    def __init__(
        self,
        control: AsyncEngine,
        *,
        channel: PaymentChannel | None,
        channel_for: ChannelFor,
        hospitals: Callable[[], Awaitable[Sequence[str]]],
        platform: Callable[[], PlatformLedger | None] = lambda: None,
        resolutions: Callable[[], ResolutionSink | None] = lambda: None,
        hospital_timeout: float = 30.0,
    ) -> None:
        self._engine = control
        self._channel = channel
        self._channel_for = channel_for
        self._hospitals = hospitals
        self._platform = platform
        self._resolutions = resolutions
        self._timeout = hospital_timeout
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def run(self, business_date: dt.date, hospital_id: str | None = None) -> Report:
        """One reconciliation, stored.

        Raises:
            mesh.errors.FailedPrecondition: no payment channel is configured.
            mesh.errors.StatusError: the channel's statement could not be read.
        """
        if self._channel is None:
            raise errors.FailedPrecondition(
                "no payment channel is configured on this node ([payments] channel_url)",
                reason="PAYMENTS_NOT_CONFIGURED",
            )
        async with self._lock:
            return await self._run(self._channel, business_date, hospital_id)

    async def _run(
        self, channel: PaymentChannel, business_date: dt.date, hospital_id: str | None
    ) -> Report:
        started = dt.datetime.now(dt.UTC)
        notes: list[str] = []
        ledger = self._platform()
        platform: Sequence[PlatformPayment] | None = None
        if ledger is None:
            notes.append(
                "the platform's ledger is not wired on this node: channel vs hospitals only"
            )
        else:
            platform = await ledger.payments_for(business_date, hospital_id)
        statement: Sequence[StatementRow] = await channel.statement(business_date)
        if hospital_id is not None:
            wanted = [hospital_id]
        else:
            wanted = sorted(set(await self._hospitals()) | {p.hospital_id for p in platform or ()})
        ledgers = dict(
            zip(
                wanted,
                await asyncio.gather(
                    *(
                        read_ledger(self._channel_for, h, business_date, call_timeout=self._timeout)
                        for h in wanted
                    )
                ),
                strict=True,
            )
        )
        unread = [h for h, ledger_ in ledgers.items() if not ledger_.read]
        if unread:
            notes.append(f"ledgers not read (no hospital-side findings): {', '.join(unread)}")
        open_days = [h for h, ledger_ in ledgers.items() if ledger_.read and not ledger_.day_closed]
        if open_days:
            notes.append(f"day not closed at (run again after the close): {', '.join(open_days)}")
        found = compare(business_date, platform, statement, ledgers, hospital_id)
        applied = await self._apply([d.resolution for d in found if d.resolution is not None])
        report = Report(
            run_id=secrets.token_hex(8),
            business_date=business_date,
            hospital_id=hospital_id,
            started_at=started,
            finished_at=dt.datetime.now(dt.UTC),
            platform_payments=len(platform or ()),
            statement_rows=len(statement),
            hospitals=tuple(
                HospitalLedger(
                    h,
                    read=ledger_.read,
                    day_closed=ledger_.day_closed,
                    error=ledger_.error,
                    entries=ledger_.entries,
                )
                for h, ledger_ in ledgers.items()
            ),
            discrepancies=tuple(found),
            notes=tuple(notes),
        )
        await self._store(report, applied)
        log.info(
            "reconcile %s%s: %d discrepancies (%d platform payments, %d statement rows, "
            "%d ledgers)",
            business_date,
            f" {hospital_id}" if hospital_id else "",
            len(found),
            report.platform_payments,
            report.statement_rows,
            len(ledgers) - len(unread),
        )
        return report

    async def _apply(self, resolutions: list[Resolution]) -> dict[str, str]:
        sink = self._resolutions()
        outcome: dict[str, str] = {}
        for resolution in resolutions:
            if sink is None:
                outcome[resolution.order_id] = "reported"
                continue
            try:
                await sink.apply(resolution)
                outcome[resolution.order_id] = "applied"
            except Exception as err:  # the coordinator's refusal is recorded, not fatal
                log.warning("reconcile: resolution of %s not applied: %s", resolution.order_id, err)
                outcome[resolution.order_id] = f"refused: {type(err).__name__}: {err}"[:200]
        return outcome

    async def _store(self, report: Report, applied: dict[str, str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                RUNS.insert().values(
                    run_id=report.run_id,
                    business_date=report.business_date,
                    hospital_id=report.hospital_id or "",
                    started_at=report.started_at,
                    finished_at=report.finished_at,
                    platform_payments=report.platform_payments,
                    statement_rows=report.statement_rows,
                    hospitals=[
                        {
                            "hospital_id": h.hospital_id,
                            "read": h.read,
                            "day_closed": h.day_closed,
                            "entries": len(h.entries),
                            "error": h.error,
                        }
                        for h in report.hospitals
                    ],
                    notes=list(report.notes),
                    discrepancies=len(report.discrepancies),
                )
            )
            if report.discrepancies:
                await conn.execute(
                    DISCREPANCIES.insert(),
                    [
                        {
                            "run_id": report.run_id,
                            "seq": seq,
                            "kind": d.kind.value,
                            "hospital_id": d.hospital_id,
                            "order_id": d.order_id,
                            "out_trade_no": d.out_trade_no,
                            "out_refund_no": d.out_refund_no,
                            "platform_fen": d.platform_fen,
                            "channel_fen": d.channel_fen,
                            "hospital_fen": d.hospital_fen,
                            "detail": d.detail,
                            "resolution": d.resolution.outcome if d.resolution else "",
                            "evidence": d.resolution.evidence if d.resolution else "",
                            "applied": applied.get(d.order_id, "") if d.resolution else "",
                        }
                        for seq, d in enumerate(report.discrepancies)
                    ],
                )

    async def stored(self, run_id: str) -> list[Discrepancy]:
        """The discrepancies a stored run recorded (for checks and tools)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(DISCREPANCIES)
                    .where(DISCREPANCIES.c.run_id == run_id)
                    .order_by(DISCREPANCIES.c.seq)
                )
            ).all()
        return [
            Discrepancy(
                kind=DiscrepancyKind(r.kind),
                hospital_id=r.hospital_id,
                order_id=r.order_id,
                out_trade_no=r.out_trade_no,
                detail=r.detail,
                out_refund_no=r.out_refund_no,
                platform_fen=r.platform_fen,
                channel_fen=r.channel_fen,
                hospital_fen=r.hospital_fen,
                resolution=Resolution(r.order_id, r.resolution, r.evidence)
                if r.resolution
                else None,
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ daily schedule

    async def daily(
        self, at: tuple[int, int], *, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        """Reconciles the previous business date every day at ``at`` (UTC+8) until `shutdown`.

        A failed run is logged and tried again at the next day's time (the operator runs
        ``hplus reconcile DATE`` meanwhile); it never ends the node.
        """
        now = clock or (lambda: dt.datetime.now(dt.UTC))
        while not self._stop.is_set():
            due = next_run(now(), at)
            wait = (due - now()).total_seconds()
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, wait))
                return
            except TimeoutError:
                pass
            day = due.astimezone(CST).date() - dt.timedelta(days=1)
            try:
                await self.run(day)
            except errors.StatusError as err:
                log.error("reconcile: daily run for %s failed: %s", day, err)

    async def shutdown(self) -> None:
        """Ends the daily loop."""
        self._stop.set()

    async def answer(
        self, request: operations_pb2.ReconcileRequest
    ) -> operations_pb2.ReconcileResponse:
        """``OperationsService.Reconcile``: validates, runs and converts.

        Raises:
            mesh.errors.InvalidArgument: the date is missing or not a date.
        """
        d = request.business_date
        try:
            day = dt.date(d.year, d.month, d.day)
        except ValueError:
            raise errors.InvalidArgument(
                "business_date is not a date",
                field_violations=[("business_date", "required: a full calendar date")],
            ) from None
        if len(request.hospital_id) > 64:
            raise errors.InvalidArgument(
                "hospital_id too long", field_violations=[("hospital_id", "at most 64 characters")]
            )
        return to_proto(await self.run(day, request.hospital_id or None))


def to_proto(report: Report) -> operations_pb2.ReconcileResponse:
    """The wire form of a report."""
    finished = timestamp_pb2.Timestamp()
    finished.FromDatetime(report.finished_at)
    out = operations_pb2.ReconcileResponse(
        run_id=report.run_id,
        business_date=date_pb2.Date(
            year=report.business_date.year,
            month=report.business_date.month,
            day=report.business_date.day,
        ),
        hospital_id=report.hospital_id or "",
        platform_payments=report.platform_payments,
        statement_rows=report.statement_rows,
        notes=list(report.notes),
        finish_time=finished,
    )
    for h in report.hospitals:
        out.hospitals.add(
            hospital_id=h.hospital_id,
            ledger_read=h.read,
            day_closed=h.day_closed,
            entries=len(h.entries),
            error=h.error,
        )
    for d in report.discrepancies:
        item = out.discrepancies.add(
            kind=operations_pb2.DiscrepancyKind.Value(f"DISCREPANCY_KIND_{d.kind.value}"),
            hospital_id=d.hospital_id,
            order_id=d.order_id,
            out_trade_no=d.out_trade_no,
            out_refund_no=d.out_refund_no,
            detail=d.detail,
            resolution=d.resolution.outcome if d.resolution else "",
            evidence=d.resolution.evidence if d.resolution else "",
        )
        for name in ("platform_fen", "channel_fen", "hospital_fen"):
            value = getattr(d, name)
            if value is not None:
                setattr(item, name, value)
    return out
