"""Payment channels: the evidence a channel gives and the calls the order coordinator makes.

`PaymentChannel` is the seam; `WechatPayChannel` implements it against a WeChat-Pay-v3-like
merchant API (``tools.pay_sim`` or a real channel), and `NotifyServer` is its notification
endpoint (``[payments] notify_listen``): signature, timestamp window, nonce replay and body
bound checked before any listener sees the evidence. `open_payments` builds both from
``[payments]``.
"""

from __future__ import annotations

from cloud.payments._channel import (
    CST,
    WechatPayChannel,
    parse_statement,
    payment_evidence,
    refund_evidence,
)
from cloud.payments._keys import MerchantKeys, PaymentKeyError, load_keys, platform_serial
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
from cloud.payments._notify import (
    NOTIFY_PATH,
    NotificationRefused,
    NotificationVerifier,
    NotifyServer,
)
from cloud.payments._open import open_payments

__all__ = [
    "CST",
    "NOTIFY_PATH",
    "MerchantKeys",
    "NotificationRefused",
    "NotificationVerifier",
    "NotifyServer",
    "PaymentChannel",
    "PaymentEvidence",
    "PaymentKeyError",
    "PaymentListener",
    "Prepay",
    "RefundEvidence",
    "RefundState",
    "StatementRow",
    "TradeState",
    "WechatPayChannel",
    "load_keys",
    "open_payments",
    "parse_statement",
    "payment_evidence",
    "platform_serial",
    "refund_evidence",
]
