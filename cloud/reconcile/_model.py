"""What a reconciliation compares and what it finds.

The platform side comes through `PlatformLedger` (the order coordinator implements it over
its orders); the channel side is `cloud.payments.StatementRow`; the hospital side is each
hospital's ``GetDailyLedger``, read as `HospitalEntry`. Amounts are integers in fen.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "Discrepancy",
    "DiscrepancyKind",
    "HospitalEntry",
    "HospitalLedger",
    "PlatformLedger",
    "PlatformPayment",
    "PlatformState",
    "Report",
    "Resolution",
    "ResolutionSink",
]


class PlatformState(enum.StrEnum):
    """What the platform believes of an order's money, as reconciliation needs it."""

    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    """Not paid (yet): the channel must not hold money for it."""
    PAID = "PAID"
    """Paid at the channel; the hospital not asked (or answered) yet."""
    CONFIRMED = "CONFIRMED"
    """Paid and settled at the hospital."""
    UNKNOWN = "UNKNOWN"
    """Paid; the hospital's answer was lost (OUTCOME_UNKNOWN)."""
    FAILED = "FAILED"
    """The hospital refused; the money is (to be) refunded."""
    CANCELLED = "CANCELLED"
    """Cancelled; the money is (to be) refunded."""
    REFUNDING = "REFUNDING"
    """A refund is in flight at the channel."""
    REFUNDED = "REFUNDED"
    """Refunded at the channel."""
    MANUAL_REVIEW = "MANUAL_REVIEW"
    """Waiting for a person."""


UNPAID_STATES = frozenset({PlatformState.AWAITING_PAYMENT})
"""States in which the channel must hold no payment of the order."""
NOT_AT_HOSPITAL_STATES = frozenset({PlatformState.AWAITING_PAYMENT, PlatformState.FAILED})
"""States in which the hospital must hold no charge of the order."""


@dataclasses.dataclass(frozen=True)
class PlatformPayment:
    """One order's payment as the platform holds it."""

    order_id: str
    hospital_id: str
    out_trade_no: str
    amount_fen: int
    """What the payer paid (or is to pay)."""
    state: PlatformState
    out_refund_nos: tuple[str, ...] = ()
    """Every refund requested at the channel for this payment."""
    refunded_fen: int = 0
    """Refunded at the channel, as far as the platform knows."""
    hospital_charge_id: str = ""
    """The hospital's receipt / charge / registration id of the settlement, when known."""
    transaction_id: str = ""
    """The channel's transaction id, when known."""
    paid_at: dt.datetime | None = None
    refunded_at: dt.datetime | None = None
    """When the (last) refund succeeded; its business date decides where refunds count."""


class PlatformLedger(Protocol):
    """The platform's side of a reconciliation (implemented by the order coordinator)."""

    async def payments_for(
        self, business_date: dt.date, hospital_id: str | None
    ) -> Sequence[PlatformPayment]:
        """Every payment paid or refunded on ``business_date`` (UTC+8), of one hospital or all."""
        ...


@dataclasses.dataclass(frozen=True)
class HospitalEntry:
    """One line of a hospital's daily ledger, as reconciliation reads it."""

    hospital_id: str
    kind: str
    """``payment`` (registration, charge) or ``refund``."""
    receipt: str
    transaction_id: str
    cash_fen: int
    entry_time: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class HospitalLedger:
    """What one hospital's ledger gave, or why it gave nothing."""

    hospital_id: str
    entries: tuple[HospitalEntry, ...] = ()
    read: bool = False
    day_closed: bool = False
    error: str = ""


class DiscrepancyKind(enum.StrEnum):
    """Class of a discrepancy (``hplus.cloud.v1.DiscrepancyKind``)."""

    MISSING_AT_HOSPITAL = "MISSING_AT_HOSPITAL"
    MISSING_AT_CHANNEL = "MISSING_AT_CHANNEL"
    MISSING_AT_PLATFORM = "MISSING_AT_PLATFORM"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    STATUS_MISMATCH = "STATUS_MISMATCH"


@dataclasses.dataclass(frozen=True)
class Resolution:
    """An outcome the evidence settles exactly, for the coordinator to apply."""

    order_id: str
    outcome: str
    """``SETTLED`` (the hospital kept the paid charge) or ``REFUNDED``."""
    evidence: str
    """What proves it: the statement's transaction id and the hospital's receipt."""
    hospital_charge_id: str = ""
    transaction_id: str = ""


class ResolutionSink(Protocol):
    """Where resolutions go (the order coordinator); it decides and records, we never do."""

    async def apply(self, resolution: Resolution) -> None:
        """Apply (idempotently) one resolution."""
        ...


@dataclasses.dataclass(frozen=True)
class Discrepancy:
    """One thing the sources disagree on."""

    kind: DiscrepancyKind
    hospital_id: str
    order_id: str
    out_trade_no: str
    detail: str
    out_refund_no: str = ""
    platform_fen: int | None = None
    channel_fen: int | None = None
    hospital_fen: int | None = None
    resolution: Resolution | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    """One reconciliation run."""

    run_id: str
    business_date: dt.date
    hospital_id: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    platform_payments: int
    statement_rows: int
    hospitals: tuple[HospitalLedger, ...]
    discrepancies: tuple[Discrepancy, ...]
    notes: tuple[str, ...] = ()
