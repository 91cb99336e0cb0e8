"""Classification of hand-made discrepancies of every class, from all three sources."""

from __future__ import annotations

import datetime as dt

from cloud.payments import CST, StatementRow
from cloud.reconcile import (
    DiscrepancyKind,
    HospitalEntry,
    HospitalLedger,
    PlatformPayment,
    PlatformState,
    compare,
    next_run,
)

DAY = dt.date(2026, 12, 5)
AT = dt.datetime(2026, 12, 5, 10, 0, tzinfo=CST)
K = DiscrepancyKind
S = PlatformState


def pay(no: str, amount: int, tx: str) -> StatementRow:
    return StatementRow(DAY, "payment", no, tx, amount, occurred_at=AT)


def refund(no: str, refund_no: str, amount: int, tx: str) -> StatementRow:
    return StatementRow(DAY, "refund", no, tx, amount, out_refund_no=refund_no, occurred_at=AT)


def order(no: str, amount: int, state: PlatformState, **kw: object) -> PlatformPayment:
    return PlatformPayment(
        order_id=f"o-{no}",
        hospital_id=str(kw.pop("hospital", "h1")),
        out_trade_no=no,
        amount_fen=amount,
        state=state,
        paid_at=AT,
        **kw,  # type: ignore[arg-type]
    )


def entry(receipt: str, tx: str, cash: int, kind: str = "payment", h: str = "h1") -> HospitalEntry:
    return HospitalEntry(h, kind, receipt, tx, cash)


def ledger(*entries: HospitalEntry, h: str = "h1", closed: bool = True) -> HospitalLedger:
    return HospitalLedger(h, tuple(entries), read=True, day_closed=closed)


def test_agreeing_sources_give_nothing() -> None:
    found = compare(
        DAY,
        [
            order("A1", 4900, S.CONFIRMED, transaction_id="tx1", hospital_charge_id="R1"),
            order(
                "A2",
                1000,
                S.REFUNDED,
                out_refund_nos=("F2",),
                refunded_fen=1000,
                refunded_at=AT,
                transaction_id="tx2",
            ),
            order("A3", 500, S.AWAITING_PAYMENT),
        ],
        [pay("A1", 4900, "tx1"), pay("A2", 1000, "tx2"), refund("A2", "F2", 1000, "tx2")],
        {"h1": ledger(entry("R1", "tx1", 4900))},
    )
    assert found == []


def test_each_class_across_the_three_sources() -> None:
    platform = [
        # Confirmed, but the hospital has no entry: missing at hospital.
        order("B1", 4900, S.CONFIRMED, transaction_id="tx1"),
        # Confirmed and settled, but the channel never collected it: missing at channel.
        order("B2", 2900, S.CONFIRMED, transaction_id="tx2"),
        # The channel collected another amount: amount mismatch (platform vs channel).
        order("B3", 1400, S.CONFIRMED, transaction_id="tx3"),
        # The hospital booked another amount: amount mismatch (platform vs hospital).
        order("B4", 900, S.CONFIRMED, transaction_id="tx4"),
        # Failed on the platform, but the hospital kept the charge: status mismatch.
        order("B5", 1000, S.FAILED, transaction_id="tx5"),
    ]
    statement = [
        pay("B1", 4900, "tx1"),
        pay("B3", 1500, "tx3"),
        pay("B4", 900, "tx4"),
        pay("B5", 1000, "tx5"),
        # The channel collected a payment nobody on the platform knows: missing at platform.
        pay("X9", 700, "tx9"),
    ]
    ledgers = {
        "h1": ledger(
            entry("R2", "tx2", 2900),
            entry("R3", "tx3", 1400),
            entry("R4", "tx4", 990),
            entry("R5", "tx5", 1000),
            # The hospital has a platform payment neither the platform nor the channel has.
            entry("R8", "tx8", 300),
            # Paid at the window (no transaction id): not the platform's.
            entry("R0", "", 5000),
        )
    }
    found = compare(DAY, platform, statement, ledgers)
    got = {(d.kind, d.out_trade_no or d.detail.split("(")[1][:10]) for d in found}
    assert got == {
        (K.MISSING_AT_HOSPITAL, "B1"),
        (K.MISSING_AT_CHANNEL, "B2"),
        (K.AMOUNT_MISMATCH, "B3"),
        (K.AMOUNT_MISMATCH, "B4"),
        (K.STATUS_MISMATCH, "B5"),
        (K.MISSING_AT_PLATFORM, "X9"),
        (K.MISSING_AT_PLATFORM, "receipt R8"),
    }
    b3 = next(d for d in found if d.out_trade_no == "B3")
    assert (b3.platform_fen, b3.channel_fen, b3.hospital_fen) == (1400, 1500, 1400)
    b4 = next(d for d in found if d.out_trade_no == "B4")
    assert (b4.platform_fen, b4.channel_fen, b4.hospital_fen) == (900, 900, 990)
    assert all(d.resolution is None for d in found)


def test_an_unknown_order_is_resolvable_only_with_exact_evidence() -> None:
    platform = [
        order("C1", 4900, S.UNKNOWN),  # statement + hospital agree: SETTLED
        order("C2", 4900, S.UNKNOWN),  # hospital has nothing: report, never refund
        order("C3", 4900, S.UNKNOWN),  # hospital has another amount: amount mismatch only
    ]
    statement = [pay("C1", 4900, "tx1"), pay("C2", 4900, "tx2"), pay("C3", 4900, "tx3")]
    ledgers = {"h1": ledger(entry("R1", "tx1", 4900), entry("R3", "tx3", 4800))}
    found = {d.out_trade_no: d for d in compare(DAY, platform, statement, ledgers)}
    assert found["C1"].kind is K.STATUS_MISMATCH
    assert found["C1"].resolution is not None
    assert found["C1"].resolution.outcome == "SETTLED"
    assert found["C1"].resolution.hospital_charge_id == "R1"
    assert found["C1"].resolution.transaction_id == "tx1"
    assert found["C2"].kind is K.STATUS_MISMATCH
    assert found["C2"].resolution is None
    assert "no refund on this alone" in found["C2"].detail
    assert found["C3"].kind is K.AMOUNT_MISMATCH
    assert found["C3"].resolution is None


def test_an_unread_ledger_claims_nothing_about_the_hospital() -> None:
    platform = [order("D1", 100, S.CONFIRMED, transaction_id="tx1"), order("D2", 100, S.UNKNOWN)]
    statement = [pay("D1", 100, "tx1"), pay("D2", 100, "tx2")]
    unread = {"h1": HospitalLedger("h1", error="UNAVAILABLE: not connected")}
    found = compare(DAY, platform, statement, unread)
    assert [(d.kind, d.out_trade_no) for d in found] == [(K.STATUS_MISMATCH, "D2")]
    assert "not read (UNAVAILABLE" in found[0].detail


def test_refunds_missing_mismatched_unknown_and_resolvable() -> None:
    platform = [
        order("E1", 1000, S.REFUNDED, out_refund_nos=("F1",), refunded_fen=1000, refunded_at=AT),
        order("E2", 1000, S.REFUNDED, out_refund_nos=("F2",), refunded_fen=1000, refunded_at=AT),
        order("E3", 1000, S.CONFIRMED, transaction_id="tx3"),
        order("E4", 1000, S.REFUNDING, out_refund_nos=("F4",), refunded_fen=1000),
    ]
    statement = [
        pay("E1", 1000, "tx1"),
        pay("E2", 1000, "tx2"),
        refund("E2", "F2", 900, "tx2"),
        pay("E3", 1000, "tx3"),
        refund("E3", "F3", 1000, "tx3"),
        pay("E4", 1000, "tx4"),
        refund("E4", "F4", 1000, "tx4"),
    ]
    found = compare(DAY, platform, statement, {})
    by = {(d.out_trade_no, d.kind) for d in found}
    assert (("E1", K.MISSING_AT_CHANNEL)) in by
    assert (("E2", K.AMOUNT_MISMATCH)) in by
    assert (("E3", K.STATUS_MISMATCH)) in by  # refunded at the channel, confirmed here
    assert (("E3", K.MISSING_AT_PLATFORM)) in by  # and the refund number is unknown
    e4 = next(d for d in found if d.out_trade_no == "E4")
    assert e4.resolution is not None
    assert e4.resolution.outcome == "REFUNDED"


def test_a_hospital_filter_keeps_to_that_hospital() -> None:
    platform = [
        order("G1", 100, S.CONFIRMED, transaction_id="tx1", hospital="h1"),
        order("G2", 100, S.CONFIRMED, transaction_id="tx2", hospital="h2"),
    ]
    statement = [pay("G2", 100, "tx2"), pay("G3", 100, "tx3")]
    found = compare(DAY, platform, statement, {"h1": ledger()}, hospital_id="h1")
    assert [(d.kind, d.out_trade_no) for d in found] == [
        (K.MISSING_AT_CHANNEL, "G1"),
        (K.MISSING_AT_HOSPITAL, "G1"),
    ]


def test_without_the_platform_the_channel_and_hospitals_are_compared() -> None:
    statement = [pay("H1", 100, "tx1"), pay("H2", 100, "tx2")]
    found = compare(
        DAY, None, statement, {"h1": ledger(entry("R1", "tx1", 100), entry("R3", "tx3", 5))}
    )
    assert {(d.kind, d.out_trade_no) for d in found} == {
        (K.MISSING_AT_HOSPITAL, "H2"),
        (K.MISSING_AT_CHANNEL, ""),
    }


def test_the_daily_time_is_in_utc8() -> None:
    now = dt.datetime(2026, 12, 5, 17, 30, tzinfo=dt.UTC)  # 01:30 on the 6th in UTC+8
    assert next_run(now, (2, 0)) == dt.datetime(2026, 12, 6, 2, 0, tzinfo=CST)
    later = dt.datetime(2026, 12, 5, 18, 0, tzinfo=dt.UTC)  # 02:00 exactly: tomorrow
    assert next_run(later, (2, 0)) == dt.datetime(2026, 12, 7, 2, 0, tzinfo=CST)
