"""What the cloud knows of a payment channel: the evidence it gives and the calls it takes.

The order coordinator (``cloud.orders``) talks to a channel only through `PaymentChannel`;
the WeChat-Pay-like client (``cloud.payments``) implements it against the payment simulator
(``tools.pay_sim``) or a real channel. Notifications and queries give the same evidence
types, so the coordinator treats them alike and is idempotent under duplicates.

Amounts are integers in fen (1/100 CNY), as the channels count them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

__all__ = [
    "PaymentChannel",
    "PaymentEvidence",
    "PaymentListener",
    "Prepay",
    "RefundEvidence",
    "RefundState",
    "StatementRow",
    "TradeState",
]


class TradeState(enum.StrEnum):
    """State of a payment at the channel (WeChat Pay v3 ``trade_state``)."""

    NOTPAY = "NOTPAY"
    """Created, not paid (yet)."""
    USERPAYING = "USERPAYING"
    """The payer is paying (entering a password)."""
    SUCCESS = "SUCCESS"
    """Paid."""
    REFUND = "REFUND"
    """Paid, then (partly) refunded."""
    CLOSED = "CLOSED"
    """Closed unpaid; can no longer be paid."""
    PAYERROR = "PAYERROR"
    """Failed at the channel (bank refused, ...)."""
    NOT_FOUND = "NOT_FOUND"
    """The channel has no payment with this out-trade number (evidence of absence)."""


class RefundState(enum.StrEnum):
    """State of a refund at the channel (WeChat Pay v3 refund ``status``)."""

    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    ABNORMAL = "ABNORMAL"
    NOT_FOUND = "NOT_FOUND"
    """The channel has no refund with this refund number (evidence of absence)."""


@dataclasses.dataclass(frozen=True)
class Prepay:
    """A prepay order created at the channel: what the app needs to open the wallet."""

    out_trade_no: str
    prepay_id: str
    app_parameters: dict[str, str]
    """Given to the app SDK as is (appId, timeStamp, nonceStr, package, signType, paySign)."""
    expires_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class PaymentEvidence:
    """What the channel says of one payment, from a verified notification or a query."""

    out_trade_no: str
    state: TradeState
    amount_fen: int
    transaction_id: str = ""
    paid_at: dt.datetime | None = None
    source: str = "query"
    """``"query"`` or ``"notification"``: for the order's history, not for decisions."""


@dataclasses.dataclass(frozen=True)
class RefundEvidence:
    """What the channel says of one refund, from a verified notification or a query."""

    out_refund_no: str
    out_trade_no: str
    state: RefundState
    amount_fen: int
    refund_id: str = ""
    succeeded_at: dt.datetime | None = None
    source: str = "query"


@dataclasses.dataclass(frozen=True)
class StatementRow:
    """One line of the channel's daily statement (a payment or a refund)."""

    business_date: dt.date
    kind: str
    """``"payment"`` or ``"refund"``."""
    out_trade_no: str
    transaction_id: str
    amount_fen: int
    """Positive for payments and refunds alike; ``kind`` tells which."""
    out_refund_no: str = ""
    occurred_at: dt.datetime | None = None


PaymentListener = Callable[[PaymentEvidence | RefundEvidence], Awaitable[None]]
"""Called with the evidence of every verified notification (duplicates included)."""


class PaymentChannel(Protocol):
    """One payment channel as the coordinator uses it.

    Every method is idempotent by its out-trade / out-refund number, so a caller that lost an
    answer calls again. Errors are ``mesh.errors`` tree errors: ``Unavailable`` /
    ``DeadlineExceeded`` when the answer was lost (the outcome is unknown: query, never
    assume), ``InvalidArgument`` / ``FailedPrecondition`` when the channel refused.
    """

    async def prepay(
        self, out_trade_no: str, amount_fen: int, description: str, payer: str
    ) -> Prepay:
        """Create (or, called again, return) the prepay order."""
        ...

    async def query_payment(self, out_trade_no: str) -> PaymentEvidence:
        """The channel's current evidence of a payment (``NOT_FOUND`` state if it has none)."""
        ...

    async def close_payment(self, out_trade_no: str) -> None:
        """Close an unpaid payment so it can no longer be paid (idempotent)."""
        ...

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundEvidence:
        """Request (or, called again, return) a refund of a paid payment."""
        ...

    async def query_refund(self, out_refund_no: str) -> RefundEvidence:
        """The channel's current evidence of a refund (``NOT_FOUND`` state if it has none)."""
        ...

    async def statement(self, business_date: dt.date) -> Sequence[StatementRow]:
        """The channel's statement for one business date (its time zone, UTC+8)."""
        ...

    def add_listener(self, listener: PaymentListener) -> None:
        """Receive the evidence of every verified notification."""
        ...
