"""Orders in the business partitions: rows, their history, and the queries over them.

An order lives in its account's region (its id carries it: ``44-3f9c…``). Every change is
one transaction that updates the row under its ``version`` (a concurrent change makes it
`Conflict`, and the caller decides again on the fresh row) and appends to the order's
history in the same transaction, so the history is exactly the sequence of changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import message as pb_message
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.orders._machine import FINAL, Step
from cloud.orders._schema import ORDER_HISTORY, ORDER_REQUESTS, ORDERS
from cloud.partitions import PartitionSet, reading

__all__ = [
    "BUSINESS_ZONE",
    "Conflict",
    "HistoryEntry",
    "OrderPayment",
    "OrderRow",
    "OrderStore",
    "fingerprint",
    "region_of",
]

BUSINESS_ZONE = dt.timezone(dt.timedelta(hours=8))
"""Business dates (payments, reconciliation) are days in UTC+8, as the channels count them."""


def fingerprint(request: pb_message.Message) -> str:
    """The digest of a request without its ``request_id``: what a retry must repeat."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def region_of(order_id: str) -> str | None:
    """The region an order id routes to (``44-…`` → ``44``), or ``None``."""
    head, sep, tail = order_id.partition("-")
    if not sep or len(head) != 2 or not head.isdigit() or not tail:
        return None
    return head


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _stored(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every time in UTC, as they are stored.

    SQLite keeps a timezone-aware column's wall time and drops the offset, so a time in
    another zone (the payment channel's, UTC+8) would read back eight hours off.
    """
    return {
        k: v.astimezone(dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is not None else v
        for k, v in values.items()
    }


class Conflict(Exception):
    """The order changed since it was read; read it again and decide again."""


@dataclasses.dataclass(frozen=True)
class OrderRow:
    """One order as stored (see ``_schema.ORDERS`` for each column)."""

    order_id: str
    region: str
    account_id: str
    app_id: str
    request_id: str
    hospital_id: str
    slot_id: str
    patient_id: str
    hospital_patient_id: str
    patient: bytes
    step: Step
    unknown: bool
    review: bool
    review_reason: str
    step_key: str
    in_flight: bool
    unknown_since: dt.datetime | None
    refusals: int
    absences: int
    failures: int
    next_attempt_at: dt.datetime | None
    status_code: int
    status_message: str
    cancel_from: str
    refund_for: str
    hold_id: str
    appointment_id: str
    receipt_number: str
    appointment: bytes
    amount_due_fen: int
    expected_fee_fen: int | None
    """The fee the app showed when booking (``None``: none was given)."""
    payment_deadline: dt.datetime | None
    pay_request_id: str
    pay_channel: int
    out_trade_no: str
    payment_state: str
    paid_fen: int
    transaction_id: str
    paid_at: dt.datetime | None
    payment_created_at: dt.datetime | None
    refund_no: str
    refund_state: str
    refund_fen: int
    refunded_fen: int
    refund_created_at: dt.datetime | None
    refund_completed_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    status_changed_at: dt.datetime
    version: int
    history_count: int

    @classmethod
    def of(cls, row: Any) -> OrderRow:
        values = dict(row._mapping)
        for name, value in values.items():
            if isinstance(value, dt.datetime):
                values[name] = _aware(value)
        values["step"] = Step(values["step"])
        values["unknown"] = bool(values["unknown"])
        values["review"] = bool(values["review"])
        values["in_flight"] = bool(values["in_flight"])
        return cls(**values)

    @property
    def paid(self) -> bool:
        """Whether the channel took this order's money."""
        return self.paid_at is not None

    @property
    def settled(self) -> bool:
        """Nothing more will happen without the patient, the channel or an operator."""
        if self.review:
            return True
        if self.step in FINAL:
            return True
        return self.step is Step.CONFIRMED


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One line of an order's history."""

    seq: int
    at: dt.datetime
    kind: str
    """``created``, ``intent``, ``transition``, ``answer``, ``refused``, ``lost``, ``probe``,
    ``payment``, ``refund``, ``review``, ``resolved``, ``not_sent``, ``resumed``."""
    step_from: str
    step_to: str
    key: str
    detail: str
    node: str


@dataclasses.dataclass(frozen=True)
class OrderPayment:
    """One order's payment on a business date, for the reconciliation's platform side."""

    order_id: str
    hospital_id: str
    out_trade_no: str
    refund_nos: tuple[str, ...]
    amount_fen: int
    refunded_fen: int
    state: str
    """The order's step."""
    hospital_charge_id: str
    """The HIS receipt of the registration fee (empty until the hospital booked)."""
    transaction_id: str
    paid_at: dt.datetime


class OrderStore:
    """Reads and writes orders in the partitions.

    Args:
        parts: the partitions.
        node_id: written on every history line (which node acted).
    """

    def __init__(self, parts: PartitionSet, *, node_id: str = "") -> None:
        self.parts = parts
        self._node = node_id

    async def create(
        self,
        values: Mapping[str, Any],
        *,
        method: str,
        digest: str,
        history: Sequence[tuple[str, str]],
    ) -> OrderRow:
        """Insert an order with the request that made it and its first history lines.

        Raises:
            sqlalchemy.exc.IntegrityError: the request (or order) exists already.
        """
        region = values["region"]
        values = _stored({**values, "history_count": len(history)})

        async def work(conn: AsyncConnection) -> OrderRow:
            await conn.execute(ORDERS.insert().values(**values))
            await conn.execute(
                ORDER_REQUESTS.insert().values(
                    account_id=values["account_id"],
                    request_id=values["request_id"],
                    region=region,
                    method=method,
                    fingerprint=digest,
                    order_id=values["order_id"],
                    created_at=values["created_at"],
                )
            )
            await self._append(
                conn,
                values["order_id"],
                region,
                Step(values["step"]),
                Step(values["step"]),
                history,
                key=values.get("step_key", ""),
                first=1,
            )
            return await self._load(conn, values["order_id"])

        return await self.parts.write(region, work)

    async def request(self, region: str, account_id: str, request_id: str) -> Any:
        """The account's recorded request ``request_id`` (method, fingerprint, order)."""

        async def work(conn: AsyncConnection) -> Any:
            return (
                await conn.execute(
                    sa.select(ORDER_REQUESTS).where(
                        ORDER_REQUESTS.c.account_id == account_id,
                        ORDER_REQUESTS.c.request_id == request_id,
                    )
                )
            ).first()

        return await self.parts.read(region, work)

    async def get(self, order_id: str) -> OrderRow | None:
        """The order, or ``None`` (also for an id that routes nowhere)."""
        region = region_of(order_id)
        if region is None:
            return None
        try:
            self.parts.partition_of(region)
        except KeyError:
            return None

        async def work(conn: AsyncConnection) -> OrderRow | None:
            row = (
                await conn.execute(sa.select(ORDERS).where(ORDERS.c.order_id == order_id))
            ).first()
            return None if row is None else OrderRow.of(row)

        return await self.parts.read(region, work)

    async def _load(self, conn: AsyncConnection, order_id: str) -> OrderRow:
        row = (await conn.execute(sa.select(ORDERS).where(ORDERS.c.order_id == order_id))).one()
        return OrderRow.of(row)

    async def _append(
        self,
        conn: AsyncConnection,
        order_id: str,
        region: str,
        step_from: Step,
        step_to: Step,
        lines: Sequence[tuple[str, str]] | Sequence[tuple[str, str, str]],
        key: str = "",
        *,
        first: int,
    ) -> None:
        """Insert ``lines`` as the history's entries ``first``, ``first + 1``, …."""
        if not lines:
            return
        now = dt.datetime.now(dt.UTC)
        rows = []
        for i, line in enumerate(lines, start=first):
            kind, detail = line[0], line[1]
            line_key = line[2] if len(line) > 2 else key
            rows.append(
                {
                    "order_id": order_id,
                    "seq": i,
                    "region": region,
                    "at": now,
                    "kind": kind,
                    "step_from": step_from.value,
                    "step_to": step_to.value,
                    "key": line_key,
                    "detail": detail[:500],
                    "node": self._node,
                }
            )
        await conn.execute(ORDER_HISTORY.insert(), rows)

    async def update(
        self,
        row: OrderRow,
        changes: Mapping[str, Any],
        history: Sequence[tuple[str, str]] | Sequence[tuple[str, str, str]],
        *,
        key: str = "",
        request: tuple[str, str, str] | None = None,
    ) -> OrderRow:
        """Apply ``changes`` to the order as read in ``row`` and append ``history``.

        ``request`` (``request_id``, method, fingerprint) is recorded as being about this
        order in the same transaction.

        Raises:
            Conflict: the order changed since ``row`` was read (nothing was written).
            sqlalchemy.exc.IntegrityError: ``request`` was recorded already.
        """
        now = dt.datetime.now(dt.UTC)
        values = _stored(changes)
        values["version"] = row.version + 1
        values["updated_at"] = now
        values["history_count"] = row.history_count + len(history)
        step_to = Step(values.get("step", row.step))
        if "step" in values:
            values["step"] = step_to.value
            if step_to is not row.step:
                values["status_changed_at"] = now
        if values.get("unknown") is True and not row.unknown:
            values.setdefault("status_changed_at", now)

        async def work(conn: AsyncConnection) -> OrderRow:
            done = await conn.execute(
                ORDERS.update()
                .where(ORDERS.c.order_id == row.order_id, ORDERS.c.version == row.version)
                .values(**values)
            )
            if done.rowcount != 1:
                raise Conflict(row.order_id)
            if request is not None:
                await conn.execute(
                    ORDER_REQUESTS.insert().values(
                        account_id=row.account_id,
                        request_id=request[0],
                        region=row.region,
                        method=request[1],
                        fingerprint=request[2],
                        order_id=row.order_id,
                        created_at=now,
                    )
                )
            await self._append(
                conn,
                row.order_id,
                row.region,
                row.step,
                step_to,
                history,
                key=key or row.step_key or values.get("step_key", ""),
                first=row.history_count + 1,
            )
            # The row as written (the version guard says nobody else changed it).
            return dataclasses.replace(row, **{**values, "step": step_to})

        return await self.parts.write(row.region, work)

    async def history(self, order_id: str) -> list[HistoryEntry]:
        """The order's whole history, oldest first."""
        region = region_of(order_id)
        if region is None:
            return []

        async def work(conn: AsyncConnection) -> list[HistoryEntry]:
            rows = (
                await conn.execute(
                    sa.select(ORDER_HISTORY)
                    .where(ORDER_HISTORY.c.order_id == order_id)
                    .order_by(ORDER_HISTORY.c.seq)
                )
            ).all()
            return [
                HistoryEntry(
                    seq=r.seq,
                    at=_aware(r.at) or r.at,
                    kind=r.kind,
                    step_from=r.step_from,
                    step_to=r.step_to,
                    key=r.key,
                    detail=r.detail,
                    node=r.node,
                )
                for r in rows
            ]

        return await self.parts.read(region, work)

    async def _scan(self, query: Any) -> list[OrderRow]:
        """Run ``query`` on every active partition (read-only) and gather the orders."""
        out: list[OrderRow] = []
        for info in self.parts.map.active:
            engine = await self.parts.engine(info)
            async with reading(engine) as conn:
                out.extend(OrderRow.of(r) for r in (await conn.execute(query)).all())
        return out

    async def due(self, now: dt.datetime, *, limit: int = 200) -> list[OrderRow]:
        """Orders the coordinator should act on now: not settled and due, oldest first."""
        query = (
            sa.select(ORDERS)
            .where(
                ORDERS.c.review.is_(False),
                ORDERS.c.step.not_in([s.value for s in FINAL] + [Step.CONFIRMED.value]),
                sa.or_(ORDERS.c.next_attempt_at.is_(None), ORDERS.c.next_attempt_at <= now),
            )
            .order_by(ORDERS.c.next_attempt_at)
            .limit(limit)
        )
        rows = await self._scan(query)
        # A refund into a final step is due too (CANCELLED etc. are final only once refunded).
        return rows

    async def unsettled(self) -> list[OrderRow]:
        """Every order not settled (for tests and the chaos run's wait)."""
        query = sa.select(ORDERS).where(
            ORDERS.c.review.is_(False),
            ORDERS.c.step.not_in([s.value for s in FINAL] + [Step.CONFIRMED.value]),
        )
        return await self._scan(query)

    async def reviews(self) -> list[OrderRow]:
        """The manual-review queue, oldest first."""
        rows = await self._scan(sa.select(ORDERS).where(ORDERS.c.review.is_(True)))
        return sorted(rows, key=lambda r: (r.updated_at, r.order_id))

    async def all_orders(self) -> list[OrderRow]:
        """Every order of every partition (small deployments, tests and the chaos run)."""
        return await self._scan(sa.select(ORDERS))

    async def by_trade(self, out_trade_no: str) -> OrderRow | None:
        """The order an out-trade number belongs to (it carries the order's id)."""
        order_id = out_trade_no.rpartition("-p")[0]
        found = await self.get(order_id) if order_id else None
        if found is None or found.out_trade_no != out_trade_no:
            return None
        return found

    async def list_for(
        self,
        region: str,
        account_id: str,
        *,
        filtered: bool,
        hospital_id: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[OrderRow]:
        """The account's orders, newest first, after the ``(created_at, order_id)`` cursor."""
        query = sa.select(ORDERS).where(ORDERS.c.account_id == account_id)
        if hospital_id:
            query = query.where(ORDERS.c.hospital_id == hospital_id)
        if start is not None:
            query = query.where(ORDERS.c.created_at >= start)
        if end is not None:
            query = query.where(ORDERS.c.created_at < end)
        if after is not None:
            at, oid = after
            query = query.where(
                sa.or_(
                    ORDERS.c.created_at < at,
                    sa.and_(ORDERS.c.created_at == at, ORDERS.c.order_id < oid),
                )
            )
        query = query.order_by(ORDERS.c.created_at.desc(), ORDERS.c.order_id.desc())
        if not filtered:  # a status filter is applied to what patients see, after the read
            query = query.limit(limit)

        async def work(conn: AsyncConnection) -> list[OrderRow]:
            return [OrderRow.of(r) for r in (await conn.execute(query)).all()]

        return await self.parts.read(region, work)

    async def payments_for(
        self, business_date: dt.date, hospital_id: str | None
    ) -> list[OrderPayment]:
        """Every order paid on ``business_date`` (UTC+8), of one hospital or all.

        This is the platform's side of the three-way reconciliation.
        """
        start = dt.datetime.combine(business_date, dt.time(), BUSINESS_ZONE).astimezone(dt.UTC)
        end = start + dt.timedelta(days=1)
        query = sa.select(ORDERS).where(ORDERS.c.paid_at >= start, ORDERS.c.paid_at < end)
        if hospital_id is not None:
            query = query.where(ORDERS.c.hospital_id == hospital_id)
        out = []
        for row in sorted(await self._scan(query), key=lambda r: (r.paid_at, r.order_id)):
            assert row.paid_at is not None
            out.append(
                OrderPayment(
                    order_id=row.order_id,
                    hospital_id=row.hospital_id,
                    out_trade_no=row.out_trade_no,
                    refund_nos=(row.refund_no,) if row.refund_no else (),
                    amount_fen=row.paid_fen,
                    refunded_fen=row.refunded_fen,
                    state=row.step.value,
                    hospital_charge_id=row.receipt_number,
                    transaction_id=row.transaction_id,
                    paid_at=row.paid_at,
                )
            )
        return out
