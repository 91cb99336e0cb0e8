"""Tables of orders, in the business partitions (the account's region).

Created and changed only by ``migrations/partition``; this module describes them for
queries and must match the newest migration (a test checks). No foreign keys, a ``region``
on every table, so a split copies them table by table.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["ORDERS", "ORDER_HISTORY", "ORDER_REQUESTS", "PARTITIONED"]

PARTITIONED = metadata()

ORDERS = sa.Table(
    "orders",
    PARTITIONED,
    sa.Column("order_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("hospital_id", sa.String(64), nullable=False, index=True),
    sa.Column("slot_id", sa.String(64), nullable=False),
    sa.Column("patient_id", sa.String(32), nullable=False),
    sa.Column("hospital_patient_id", sa.String(64), nullable=False),
    sa.Column("patient", sa.LargeBinary, nullable=False),
    sa.Column("step", sa.String(16), nullable=False),
    sa.Column("unknown", sa.Boolean, nullable=False),
    sa.Column("review", sa.Boolean, nullable=False),
    sa.Column("review_reason", sa.String(200), nullable=False, server_default=""),
    sa.Column("step_key", sa.String(128), nullable=False, server_default=""),
    sa.Column("unknown_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refusals", sa.Integer, nullable=False, server_default="0"),
    sa.Column("absences", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("in_flight", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status_code", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status_message", sa.String(500), nullable=False, server_default=""),
    sa.Column("cancel_from", sa.String(16), nullable=False, server_default=""),
    sa.Column("refund_for", sa.String(16), nullable=False, server_default=""),
    sa.Column("hold_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("appointment_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("receipt_number", sa.String(64), nullable=False, server_default=""),
    sa.Column("appointment", sa.LargeBinary, nullable=False),
    sa.Column("amount_due_fen", sa.BigInteger, nullable=False, server_default="0"),
    # The fee the app showed (BookAppointmentRequest.expected_fee); NULL: none.
    sa.Column("expected_fee_fen", sa.BigInteger, nullable=True),
    sa.Column("payment_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("pay_request_id", sa.String(36), nullable=False, server_default=""),
    sa.Column("pay_channel", sa.Integer, nullable=False, server_default="0"),
    sa.Column("out_trade_no", sa.String(32), nullable=False, server_default="", index=True),
    sa.Column("payment_state", sa.String(16), nullable=False, server_default=""),
    sa.Column("paid_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("transaction_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("payment_created_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refund_no", sa.String(32), nullable=False, server_default=""),
    sa.Column("refund_state", sa.String(16), nullable=False, server_default=""),
    sa.Column("refund_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("refunded_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("refund_created_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refund_completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("history_count", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("account_id", "request_id"),
)
"""One row per order: its step in the state machine (with the ``unknown`` and ``review``
flags), the idempotency key of the hospital write in flight (``step_key``, written before
the call), what the hospital and the payment channel said, and when to act next."""

ORDER_HISTORY = sa.Table(
    "order_history",
    PARTITIONED,
    sa.Column("order_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("step_from", sa.String(16), nullable=False),
    sa.Column("step_to", sa.String(16), nullable=False),
    sa.Column("key", sa.String(128), nullable=False, server_default=""),
    sa.Column("detail", sa.String(500), nullable=False, server_default=""),
    sa.Column("node", sa.String(64), nullable=False, server_default=""),
)
"""Every intent, transition, probe and piece of evidence of an order, in order (``seq``);
never rewritten."""

ORDER_REQUESTS = sa.Table(
    "order_requests",
    PARTITIONED,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""Which order each write request (``request_id``, per account) was about, and a digest of
its parameters: a retry finds its order, another request under the same id is refused."""
