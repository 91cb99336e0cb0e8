"""The orders as reconciliation sees them: the platform's ledger and the resolutions' sink.

`cloud.reconcile` compares the platform's payments with the channel's statement and the
hospitals' ledgers; this adapter gives it the platform's side from the order store and takes
back the resolutions the evidence settles exactly. A resolution is applied only to an order
waiting for a person (manual review): any other order is still being settled by the
coordinator, which asks the hospital itself — reconciliation informs, it never races it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from cloud.orders._coordinator import OrderCoordinator
from cloud.orders._machine import Step
from cloud.orders._store import OrderPayment, OrderStore
from cloud.reconcile import PlatformPayment, PlatformState, Resolution

__all__ = ["OrdersLedger"]

log = logging.getLogger(__name__)


def _state(p: OrderPayment) -> PlatformState:
    step = Step(p.state)
    refunded = p.refunded_fen >= p.amount_fen > 0
    if step is Step.CONFIRMED or step is Step.CANCELLING:
        return PlatformState.CONFIRMED
    if step is Step.REFUNDING:
        return PlatformState.REFUNDING
    if step is Step.CANCELLED:
        return PlatformState.REFUNDED if refunded else PlatformState.CANCELLED
    if step in (Step.FAILED, Step.EXPIRED):
        return PlatformState.REFUNDED if refunded else PlatformState.FAILED
    return PlatformState.PAID


class OrdersLedger:
    """`cloud.reconcile.PlatformLedger` and `ResolutionSink` over the order store."""

    def __init__(self, store: OrderStore, coordinator: OrderCoordinator) -> None:
        self._store = store
        self._coordinator = coordinator

    async def payments_for(
        self, business_date: dt.date, hospital_id: str | None
    ) -> Sequence[PlatformPayment]:
        """Every order paid on ``business_date`` (UTC+8), as reconciliation compares it."""
        rows = await self._store.payments_for(business_date, hospital_id)
        return [
            PlatformPayment(
                order_id=p.order_id,
                hospital_id=p.hospital_id,
                out_trade_no=p.out_trade_no,
                amount_fen=p.amount_fen,
                state=_state(p),
                out_refund_nos=p.refund_nos,
                refunded_fen=p.refunded_fen,
                hospital_charge_id=p.hospital_charge_id,
                transaction_id=p.transaction_id,
                paid_at=p.paid_at,
            )
            for p in rows
        ]

    async def apply(self, resolution: Resolution) -> None:
        """Settle an order under manual review with reconciliation's exact evidence."""
        row = await self._store.get(resolution.order_id)
        if row is None or not row.review:
            log.info(
                "reconciliation: evidence for order %s (%s: %s) noted; the coordinator is "
                "settling it itself",
                resolution.order_id,
                resolution.outcome,
                resolution.evidence,
            )
            return
        await self._coordinator.resolve(
            resolution.order_id,
            happened=resolution.outcome == "SETTLED",
            note=f"reconciliation: {resolution.evidence}",
        )
