"""Payment channels: the evidence a channel gives and the calls the order coordinator makes.

`PaymentChannel` is the seam; the WeChat-Pay-like client and its notification endpoint
implement it.
"""

from __future__ import annotations

from cloud.payments._model import (
    PaymentChannel,
    PaymentEvidence,
    PaymentListener,
    Prepay,
    RefundEvidence,
    RefundState,
    StatementRow,
    TradeState,
)

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
