"""Orders, their history and the requests that made or changed them.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the order tables."""
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
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
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.Column("payment_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pay_request_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("pay_channel", sa.Integer, nullable=False, server_default="0"),
        sa.Column("out_trade_no", sa.String(32), nullable=False, server_default=""),
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
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
        sa.UniqueConstraint("account_id", "request_id", name="uq_orders_account_id_request_id"),
    )
    op.create_index("ix_orders_hospital_id", "orders", ["hospital_id"])
    op.create_index("ix_orders_next_attempt_at", "orders", ["next_attempt_at"])
    op.create_index("ix_orders_out_trade_no", "orders", ["out_trade_no"])
    op.create_table(
        "order_history",
        sa.Column("order_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step_from", sa.String(16), nullable=False),
        sa.Column("step_to", sa.String(16), nullable=False),
        sa.Column("key", sa.String(128), nullable=False, server_default=""),
        sa.Column("detail", sa.String(500), nullable=False, server_default=""),
        sa.Column("node", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("order_id", "seq", name="pk_order_history"),
    )
    op.create_table(
        "order_requests",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "request_id", name="pk_order_requests"),
    )


def downgrade() -> None:
    """Drop the order tables."""
    for table in ("order_requests", "order_history", "orders"):
        op.drop_table(table)
