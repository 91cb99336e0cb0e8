"""Tables of reconciliation runs in the control database (created by ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["DISCREPANCIES", "RECONCILE", "RUNS"]

RECONCILE = metadata()

RUNS = sa.Table(
    "reconcile_runs",
    RECONCILE,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("hospital_id", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("platform_payments", sa.Integer, nullable=False),
    sa.Column("statement_rows", sa.Integer, nullable=False),
    sa.Column("hospitals", sa.JSON, nullable=False),
    sa.Column("notes", sa.JSON, nullable=False),
    sa.Column("discrepancies", sa.Integer, nullable=False),
    sa.Index("ix_reconcile_runs_date", "business_date", "hospital_id"),
)

DISCREPANCIES = sa.Table(
    "reconcile_discrepancies",
    RECONCILE,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
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
)
