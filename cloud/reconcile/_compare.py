"""The comparison itself: three sources in, classified discrepancies out (no I/O).

Matching keys: platform ↔ channel by out-trade number (payments) and out-refund number
(refunds); platform/channel ↔ hospital by the hospital's receipt (``hospital_charge_id``)
when the platform knows it, else by the channel's transaction id, which the hospital stores
on its entry when the cloud settles (``Payment.transaction_id``). Hospital entries without a
transaction id were paid elsewhere (at the window) and are not the platform's.

Auto-resolution only where the evidence is exact: an order the platform holds as
``UNKNOWN`` (or ``PAID``, its settle in flight) whose payment the statement shows and whose
charge the hospital's ledger shows, all three with the same amount, resolves ``SETTLED``; a
``REFUNDING`` order whose every refund the statement shows, summing to what the platform
refunds, resolves ``REFUNDED``. Everything else is reported for a person, never acted on.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Mapping, Sequence

from cloud.payments import CST, StatementRow
from cloud.reconcile._model import (
    NOT_AT_HOSPITAL_STATES,
    UNPAID_STATES,
    Discrepancy,
    DiscrepancyKind,
    HospitalEntry,
    HospitalLedger,
    PlatformPayment,
    PlatformState,
    Resolution,
)

__all__ = ["compare"]

K = DiscrepancyKind
_REFUND_STATES = frozenset(
    {PlatformState.REFUNDING, PlatformState.REFUNDED, PlatformState.FAILED, PlatformState.CANCELLED}
)


def _day(value: dt.datetime | None) -> dt.date | None:
    return None if value is None else value.astimezone(CST).date()


class _Hospital:
    """One read ledger, indexed; each entry is matched at most once (by its position)."""

    def __init__(self, ledger: HospitalLedger) -> None:
        self.ledger = ledger
        self.used = bytearray(len(ledger.entries))
        self.by_receipt: dict[str, list[int]] = collections.defaultdict(list)
        self.payments_by_tx: dict[str, list[int]] = collections.defaultdict(list)
        self.refunds_by_tx: dict[str, list[int]] = collections.defaultdict(list)
        for i, entry in enumerate(ledger.entries):
            if entry.kind == "payment":
                self.by_receipt[entry.receipt].append(i)
                if entry.transaction_id:
                    self.payments_by_tx[entry.transaction_id].append(i)
            elif entry.transaction_id:
                self.refunds_by_tx[entry.transaction_id].append(i)

    def take_payment(self, receipt: str, tx: str) -> HospitalEntry | None:
        candidates = self.by_receipt.get(receipt, []) if receipt else []
        if not candidates and tx:
            candidates = self.payments_by_tx.get(tx, [])
        for i in candidates:
            if not self.used[i]:
                self.used[i] = 1
                return self.ledger.entries[i]
        return None

    def take_refunds(self, tx: str) -> list[HospitalEntry]:
        found = [i for i in self.refunds_by_tx.get(tx, []) if not self.used[i]]
        for i in found:
            self.used[i] = 1
        return [self.ledger.entries[i] for i in found]

    def leftovers(self) -> list[HospitalEntry]:
        return [
            e for i, e in enumerate(self.ledger.entries) if e.transaction_id and not self.used[i]
        ]


def compare(
    business_date: dt.date,
    platform: Sequence[PlatformPayment] | None,
    statement: Sequence[StatementRow],
    ledgers: Mapping[str, HospitalLedger],
    hospital_id: str | None = None,
) -> list[Discrepancy]:
    """Every discrepancy between the three sources of one business date.

    Args:
        business_date: the date (UTC+8).
        platform: the platform's payments; None when the platform side is not available
            (then only the channel and the hospitals are compared).
        statement: the channel's statement of the date.
        ledgers: each asked hospital's ledger (read or not).
        hospital_id: restrict to one hospital's payments.

    Returns:
        The discrepancies, ordered by hospital, kind and out-trade number.
    """
    out: list[Discrepancy] = []
    pay_rows: dict[str, list[StatementRow]] = collections.defaultdict(list)
    refund_rows: dict[str, StatementRow] = {}
    refunds_of: dict[str, list[StatementRow]] = collections.defaultdict(list)
    for row in statement:
        if row.kind == "refund":
            refund_rows[row.out_refund_no] = row
            refunds_of[row.out_trade_no].append(row)
        else:
            pay_rows[row.out_trade_no].append(row)
    hospitals = {h: _Hospital(ledger) for h, ledger in ledgers.items() if ledger.read}
    seen_trades: set[str] = set()
    seen_refunds: set[str] = set()

    for p in sorted(platform or (), key=lambda p: (p.hospital_id, p.out_trade_no)):
        if hospital_id is not None and p.hospital_id != hospital_id:
            continue
        seen_trades.add(p.out_trade_no)
        seen_refunds.update(p.out_refund_nos)
        out.extend(
            _one(
                business_date,
                p,
                pay_rows.get(p.out_trade_no, []),
                refund_rows,
                refunds_of.get(p.out_trade_no, []),
                hospitals.get(p.hospital_id),
                ledgers.get(p.hospital_id),
            )
        )

    # The channel's payments the platform does not know.
    tx_owner = {tx: h for h, hosp in hospitals.items() for tx in hosp.payments_by_tx if tx}
    for out_trade_no, rows in sorted(pay_rows.items()):
        if out_trade_no in seen_trades:
            continue
        tx = rows[0].transaction_id
        owner = tx_owner.get(tx, "")
        if platform is None and owner:
            hospitals[owner].take_payment("", tx)
            continue  # without the platform, channel and hospital agree on it
        if hospital_id is not None and owner != hospital_id:
            continue
        entry = hospitals[owner].take_payment("", tx) if owner else None
        if platform is None:
            if hospital_id is None and all(ledger.read for ledger in ledgers.values()):
                out.append(
                    Discrepancy(
                        K.MISSING_AT_HOSPITAL,
                        "",
                        "",
                        out_trade_no,
                        "the channel collected a payment no hospital ledger shows",
                        channel_fen=sum(r.amount_fen for r in rows),
                    )
                )
            continue
        out.append(
            Discrepancy(
                K.MISSING_AT_PLATFORM,
                owner,
                "",
                out_trade_no,
                "the channel collected a payment the platform does not know"
                + (f" (hospital receipt {entry.receipt})" if entry else ""),
                channel_fen=sum(r.amount_fen for r in rows),
                hospital_fen=entry.cash_fen if entry else None,
            )
        )
    # The channel's refunds the platform does not know.
    if platform is not None:
        for out_refund_no, row in sorted(refund_rows.items()):
            if out_refund_no in seen_refunds:
                continue
            if hospital_id is not None and row.out_trade_no not in seen_trades:
                continue
            out.append(
                Discrepancy(
                    K.MISSING_AT_PLATFORM,
                    "",
                    "",
                    row.out_trade_no,
                    "the channel refunded money the platform has no refund for",
                    out_refund_no=out_refund_no,
                    channel_fen=row.amount_fen,
                )
            )
    # The hospitals' platform entries nobody else has.
    for h, hosp in sorted(hospitals.items()):
        if hospital_id is not None and h != hospital_id:
            continue
        for entry in hosp.leftovers():
            if entry.kind == "payment":
                kind = K.MISSING_AT_CHANNEL if platform is None else K.MISSING_AT_PLATFORM
                detail = (
                    f"the hospital ledger has a payment (receipt {entry.receipt}, transaction "
                    f"{entry.transaction_id}) "
                    + ("the channel does not" if platform is None else "the platform does not know")
                )
            else:
                kind = K.MISSING_AT_PLATFORM if platform is not None else K.MISSING_AT_CHANNEL
                detail = (
                    f"the hospital ledger has a refund (receipt {entry.receipt}) of transaction "
                    f"{entry.transaction_id} no platform order explains"
                )
            out.append(Discrepancy(kind, h, "", "", detail, hospital_fen=entry.cash_fen))
    return sorted(out, key=lambda d: (d.hospital_id, d.kind.value, d.out_trade_no, d.out_refund_no))


def _one(
    business_date: dt.date,
    p: PlatformPayment,
    rows: list[StatementRow],
    refund_rows: Mapping[str, StatementRow],
    trade_refunds: list[StatementRow],
    hosp: _Hospital | None,
    ledger: HospitalLedger | None,
) -> list[Discrepancy]:
    out: list[Discrepancy] = []
    c_fen = sum(r.amount_fen for r in rows) if rows else None
    tx = p.transaction_id or (rows[0].transaction_id if rows else "")
    entry = hosp.take_payment(p.hospital_charge_id, tx) if hosp is not None else None
    h_fen = entry.cash_fen if entry is not None else None

    def add(kind: DiscrepancyKind, detail: str, resolution: Resolution | None = None) -> None:
        out.append(
            Discrepancy(
                kind,
                p.hospital_id,
                p.order_id,
                p.out_trade_no,
                detail,
                platform_fen=p.amount_fen,
                channel_fen=c_fen,
                hospital_fen=h_fen,
                resolution=resolution,
            )
        )

    state = p.state
    paid_day = _day(p.paid_at)
    if paid_day is None or paid_day == business_date:
        if state in UNPAID_STATES:
            if rows:
                add(
                    K.STATUS_MISMATCH,
                    f"the channel collected a payment the platform has as {state}",
                )
        elif not rows:
            add(K.MISSING_AT_CHANNEL, f"the platform has it {state}; the statement has no payment")
        elif c_fen != p.amount_fen:
            add(K.AMOUNT_MISMATCH, "the platform's and the channel's amounts differ")
        if hosp is not None:
            closed = "" if hosp.ledger.day_closed else " (the hospital has not closed the day)"
            if entry is None:
                if state is PlatformState.CONFIRMED:
                    add(
                        K.MISSING_AT_HOSPITAL,
                        "confirmed on the platform; the hospital ledger has no entry" + closed,
                    )
                elif state is PlatformState.UNKNOWN:
                    add(
                        K.STATUS_MISMATCH,
                        "outcome unknown on the platform and no hospital entry"
                        + closed
                        + ": the coordinator keeps probing (no refund on this alone)",
                    )
            elif state in NOT_AT_HOSPITAL_STATES:
                add(
                    K.STATUS_MISMATCH,
                    f"the hospital kept a charge (receipt {entry.receipt}) the platform has as "
                    f"{state}",
                )
            elif h_fen != p.amount_fen:
                add(K.AMOUNT_MISMATCH, "the platform's and the hospital's amounts differ")
            elif state in (PlatformState.UNKNOWN, PlatformState.PAID):
                if rows and c_fen == p.amount_fen:
                    add(
                        K.STATUS_MISMATCH,
                        f"{state} on the platform; the statement and the hospital ledger both "
                        "show it paid and settled",
                        Resolution(
                            order_id=p.order_id,
                            outcome="SETTLED",
                            evidence=f"statement transaction {rows[0].transaction_id}; "
                            f"hospital receipt {entry.receipt}",
                            hospital_charge_id=entry.receipt,
                            transaction_id=rows[0].transaction_id,
                        ),
                    )
                else:
                    add(K.STATUS_MISMATCH, f"{state} on the platform; the hospital settled it")
        elif state is PlatformState.UNKNOWN:
            why = ledger.error if ledger is not None and ledger.error else "not asked"
            add(K.STATUS_MISMATCH, f"outcome unknown; the hospital ledger was not read ({why})")

    # Refunds.
    mine = [refund_rows[n] for n in p.out_refund_nos if n in refund_rows]
    refunded_today = _day(p.refunded_at) == business_date
    if trade_refunds and not mine and state not in _REFUND_STATES:
        out.append(
            Discrepancy(
                K.STATUS_MISMATCH,
                p.hospital_id,
                p.order_id,
                p.out_trade_no,
                f"the channel refunded it; the platform has it {state}",
                out_refund_no=",".join(r.out_refund_no for r in trade_refunds),
                platform_fen=p.refunded_fen,
                channel_fen=sum(r.amount_fen for r in trade_refunds),
            )
        )
    if refunded_today or mine:
        c_ref = sum(r.amount_fen for r in mine)
        nos = ",".join(p.out_refund_nos)

        def add_refund(kind: DiscrepancyKind, detail: str, res: Resolution | None = None) -> None:
            out.append(
                Discrepancy(
                    kind,
                    p.hospital_id,
                    p.order_id,
                    p.out_trade_no,
                    detail,
                    out_refund_no=nos,
                    platform_fen=p.refunded_fen,
                    channel_fen=c_ref if mine else None,
                    resolution=res,
                )
            )

        if state not in _REFUND_STATES and mine:
            add_refund(K.STATUS_MISMATCH, f"the channel refunded it; the platform has it {state}")
        elif refunded_today and not mine:
            add_refund(
                K.MISSING_AT_CHANNEL, "the platform refunded it; the statement has no refund"
            )
        elif (
            state is PlatformState.REFUNDING
            and len(mine) == len(p.out_refund_nos)
            and (c_ref == p.refunded_fen or p.refunded_fen == 0)
        ):
            add_refund(
                K.STATUS_MISMATCH,
                "refunding on the platform; the statement shows every refund done",
                Resolution(
                    order_id=p.order_id,
                    outcome="REFUNDED",
                    evidence="statement refunds " + ",".join(r.out_refund_no for r in mine),
                    transaction_id=tx,
                ),
            )
        elif refunded_today and c_ref != p.refunded_fen:
            add_refund(K.AMOUNT_MISMATCH, "the platform's and the channel's refunds differ")
    if hosp is not None and tx:
        back = hosp.take_refunds(tx)
        if back and state not in _REFUND_STATES:
            out.append(
                Discrepancy(
                    K.STATUS_MISMATCH,
                    p.hospital_id,
                    p.order_id,
                    p.out_trade_no,
                    f"the hospital refunded it (receipt {back[0].receipt}); the platform "
                    f"has it {state}",
                    platform_fen=p.refunded_fen,
                    hospital_fen=sum(e.cash_fen for e in back),
                )
            )
    return out
