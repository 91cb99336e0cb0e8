"""Reconciliation runs and their discrepancies.

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
    """Create ``reconcile_runs`` and ``reconcile_discrepancies``."""
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("platform_payments", sa.Integer, nullable=False),
        sa.Column("statement_rows", sa.Integer, nullable=False),
        sa.Column("hospitals", sa.JSON, nullable=False),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.Column("discrepancies", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_reconcile_runs"),
    )
    op.create_index("ix_reconcile_runs_date", "reconcile_runs", ["business_date", "hospital_id"])
    op.create_table(
        "reconcile_discrepancies",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("out_refund_no", sa.String(256), nullable=False),
        sa.Column("platform_fen", sa.BigInteger, nullable=True),
        sa.Column("channel_fen", sa.BigInteger, nullable=True),
        sa.Column("hospital_fen", sa.BigInteger, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("applied", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_reconcile_discrepancies"),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("reconcile_discrepancies")
    op.drop_index("ix_reconcile_runs_date", "reconcile_runs")
    op.drop_table("reconcile_runs")
