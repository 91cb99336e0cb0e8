"""An in-memory payment channel with fault switches: the `PaymentChannel` seam, for tests.

It keeps payments and refunds by their numbers like a real channel (idempotent calls,
``NOT_FOUND`` evidence for what it never saw), notifies listeners when the "app" pays
(`pay`), and injects the faults the coordinator must survive: an answer lost after the
channel committed (`lose`), notifications lost or duplicated (`drop_notifications`,
`duplicate_notifications`). Amounts in fen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Sequence

from cloud.payments import (
    PaymentEvidence,
    PaymentListener,
    Prepay,
    RefundEvidence,
    RefundState,
    StatementRow,
    TradeState,
)
from mesh import errors

__all__ = ["InMemoryChannel"]


@dataclasses.dataclass
class _Trade:
    out_trade_no: str
    amount_fen: int
    state: TradeState = TradeState.NOTPAY
    transaction_id: str = ""
    paid_at: dt.datetime | None = None


@dataclasses.dataclass
class _Refund:
    out_refund_no: str
    out_trade_no: str
    amount_fen: int
    state: RefundState = RefundState.SUCCESS
    refund_id: str = ""
    at: dt.datetime | None = None


class InMemoryChannel:
    """A payment channel in memory (see the module)."""

    def __init__(self) -> None:
        self.trades: dict[str, _Trade] = {}
        self.refunds: dict[str, _Refund] = {}
        self.calls: Counter[str] = Counter()
        self._lose: Counter[str] = Counter()
        self.drop_notifications = 0
        """How many of the next notifications are lost."""
        self.duplicate_notifications = 0
        """How many of the next notifications are sent twice."""
        self.refund_processing = False
        """Refunds stay PROCESSING until `complete_refunds`."""
        self._listeners: list[PaymentListener] = []
        self._seq = 0

    def lose(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` commit, then lose their answer (UNAVAILABLE)."""
        self._lose[method] += times

    def _maybe_lose(self, method: str) -> None:
        self.calls[method] += 1
        if self._lose[method] > 0:
            self._lose[method] -= 1
            raise errors.Unavailable(f"{method}: the channel's answer was lost")

    def add_listener(self, listener: PaymentListener) -> None:
        """Hear every notification."""
        self._listeners.append(listener)

    async def prepay(
        self, out_trade_no: str, amount_fen: int, description: str, payer: str
    ) -> Prepay:
        """Create (or return) the prepay order; a lost answer if told so."""
        trade = self.trades.get(out_trade_no)
        if trade is None:
            trade = self.trades[out_trade_no] = _Trade(out_trade_no, amount_fen)
        elif trade.amount_fen != amount_fen:
            raise errors.InvalidArgument("out_trade_no reused with another amount")
        self._maybe_lose("prepay")
        return Prepay(
            out_trade_no=out_trade_no,
            prepay_id=f"wx{out_trade_no}",
            app_parameters={"package": f"prepay_id=wx{out_trade_no}", "signType": "RSA"},
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
        )

    def _evidence(self, trade: _Trade, source: str) -> PaymentEvidence:
        return PaymentEvidence(
            out_trade_no=trade.out_trade_no,
            state=trade.state,
            amount_fen=trade.amount_fen,
            transaction_id=trade.transaction_id,
            paid_at=trade.paid_at,
            source=source,
        )

    async def pay(self, out_trade_no: str) -> bool:
        """The patient pays in the app; the channel notifies (subject to the faults).

        Returns:
            Whether the money was taken (a closed or paid trade is not paid again).
        """
        trade = self.trades[out_trade_no]
        if trade.state is not TradeState.NOTPAY:
            return False
        self._seq += 1
        trade.state = TradeState.SUCCESS
        trade.transaction_id = f"42000{self._seq:010d}"
        trade.paid_at = dt.datetime.now(dt.UTC)
        await self._notify(self._evidence(trade, "notification"))
        return True

    async def _notify(self, evidence: PaymentEvidence | RefundEvidence) -> None:
        if self.drop_notifications > 0:
            self.drop_notifications -= 1
            return
        times = 1
        if self.duplicate_notifications > 0:
            self.duplicate_notifications -= 1
            times = 2
        for _ in range(times):
            for listener in list(self._listeners):
                await listener(evidence)

    async def query_payment(self, out_trade_no: str) -> PaymentEvidence:
        """The payment's evidence (NOT_FOUND if unknown)."""
        self.calls["query_payment"] += 1
        trade = self.trades.get(out_trade_no)
        if trade is None:
            return PaymentEvidence(out_trade_no, TradeState.NOT_FOUND, 0)
        return self._evidence(trade, "query")

    async def close_payment(self, out_trade_no: str) -> None:
        """Close an unpaid payment (idempotent)."""
        trade = self.trades.get(out_trade_no)
        if trade is not None and trade.state is TradeState.NOTPAY:
            trade.state = TradeState.CLOSED
        self._maybe_lose("close_payment")

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundEvidence:
        """Refund (idempotent by refund number); a lost answer if told so."""
        trade = self.trades.get(out_trade_no)
        if trade is None or trade.state not in (TradeState.SUCCESS, TradeState.REFUND):
            raise errors.FailedPrecondition("the payment was not paid")
        refund = self.refunds.get(out_refund_no)
        if refund is None:
            taken = sum(
                r.amount_fen for r in self.refunds.values() if r.out_trade_no == out_trade_no
            )
            if taken + amount_fen > trade.amount_fen:
                raise errors.FailedPrecondition("refund exceeds the payment")
            self._seq += 1
            refund = self.refunds[out_refund_no] = _Refund(
                out_refund_no,
                out_trade_no,
                amount_fen,
                RefundState.PROCESSING if self.refund_processing else RefundState.SUCCESS,
                f"50300{self._seq:010d}",
                dt.datetime.now(dt.UTC),
            )
            trade.state = TradeState.REFUND
        self._maybe_lose("refund")
        return self._refund_evidence(refund, "query")

    def _refund_evidence(self, refund: _Refund, source: str) -> RefundEvidence:
        return RefundEvidence(
            out_refund_no=refund.out_refund_no,
            out_trade_no=refund.out_trade_no,
            state=refund.state,
            amount_fen=refund.amount_fen,
            refund_id=refund.refund_id,
            succeeded_at=refund.at if refund.state is RefundState.SUCCESS else None,
            source=source,
        )

    async def complete_refunds(self) -> None:
        """Finish every PROCESSING refund and notify."""
        for refund in self.refunds.values():
            if refund.state is RefundState.PROCESSING:
                refund.state = RefundState.SUCCESS
                await self._notify(self._refund_evidence(refund, "notification"))

    async def query_refund(self, out_refund_no: str) -> RefundEvidence:
        """The refund's evidence (NOT_FOUND if unknown)."""
        self.calls["query_refund"] += 1
        refund = self.refunds.get(out_refund_no)
        if refund is None:
            return RefundEvidence(out_refund_no, "", RefundState.NOT_FOUND, 0)
        return self._refund_evidence(refund, "query")

    async def statement(self, business_date: dt.date) -> Sequence[StatementRow]:
        """No statement in memory."""
        await asyncio.sleep(0)
        return []
