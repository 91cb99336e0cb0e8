"""A simulated payment channel with WeChat Pay API v3 semantics, to test and demo the money path.

Merchant API (HTTP, authenticated by the merchant key): JSAPI prepay, query and close by
out-trade number, refund and refund query by out-refund number, the daily trade bill (CSV,
UTC+8 business date). The payer's side is a control call (``pay``), after which a signed,
encrypted notification is POSTed to the order's ``notify_url`` and retried until taken.
State lives in SQLite, so a restart keeps it.

Faults on command (``inject`` or ``POST /_sim/faults``): `NotificationLost`,
`NotificationDuplicated`, `NotificationDelayed` (for seconds, or held until released: past
the merchant's query), `TimeoutAfterCommit` (prepay, close, refund commit and the answer is
dropped or held), `RefundDelayed` (refunds stay PROCESSING), `InvalidSignature`.

In process::

    async with PaySim(path=tmp / "pay.db") as sim:
        sim.base_url, sim.merchant_key, sim.platform_public_key_pem
        await sim.pay("ORD0001")

As a process: ``python -m tools.pay_sim --listen 127.0.0.1:0 --state pay.db --write-keys DIR``
prints ``pay_sim merchant=... serial=... ready at http://127.0.0.1:PORT``.
"""

from __future__ import annotations

from tools.pay_sim._cli import main
from tools.pay_sim._faults import (
    COMMANDS,
    Fault,
    InvalidSignature,
    NotificationDelayed,
    NotificationDuplicated,
    NotificationLost,
    RefundDelayed,
    TimeoutAfterCommit,
    fault_from_json,
    fault_to_json,
)
from tools.pay_sim._sim import AUTH_SCHEME, SIGNATURE_TYPE, STATEMENT_COLUMNS, PaySim, sign_request
from tools.pay_sim._store import CST

__all__ = [
    "AUTH_SCHEME",
    "COMMANDS",
    "CST",
    "SIGNATURE_TYPE",
    "STATEMENT_COLUMNS",
    "Fault",
    "InvalidSignature",
    "NotificationDelayed",
    "NotificationDuplicated",
    "NotificationLost",
    "PaySim",
    "RefundDelayed",
    "TimeoutAfterCommit",
    "fault_from_json",
    "fault_to_json",
    "main",
    "sign_request",
]
