"""Edge health, alerts, probe state and results.

Revision ID: m0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the monitoring tables."""
    op.create_table(
        "edge_health",
        sa.Column("hospital_id", sa.String(64), primary_key=True),
        sa.Column("edge_id", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("software_version", sa.String(64), nullable=False),
        sa.Column("contract_release", sa.String(64), nullable=False),
        sa.Column("report", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "edge_health_history",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("edge_id", sa.String(128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("report", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "ix_edge_health_history_edge", "edge_health_history", ["hospital_id", "edge_id", "seq"]
    )
    op.create_table(
        "edge_alerts",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("edge_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_edge_alerts_open", "edge_alerts", ["hospital_id", "edge_id", "kind", "cleared_at"]
    )
    op.create_table(
        "probe_state",
        sa.Column("hospital_id", sa.String(64), primary_key=True),
        sa.Column("interface", sa.String(32), primary_key=True),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("good_fingerprint", sa.String(64), nullable=False),
        sa.Column("good_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "probe_results",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("interface", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
    )
    op.create_index("ix_probe_results_pair", "probe_results", ["hospital_id", "interface", "at"])


def downgrade() -> None:
    """Drop the monitoring tables."""
    op.drop_table("probe_results")
    op.drop_table("probe_state")
    op.drop_table("edge_alerts")
    op.drop_table("edge_health_history")
    op.drop_table("edge_health")
