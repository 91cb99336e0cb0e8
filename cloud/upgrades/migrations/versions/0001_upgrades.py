"""Edge upgrades: packages, rollouts, their targets, edges' state and their reports.

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
    """Create the upgrade tables."""
    op.create_table(
        "upgrade_packages",
        sa.Column("package_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("base_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("base_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("contract_release", sa.String(64), nullable=False),
        sa.Column("signing_key_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("package_id", name="pk_upgrade_packages"),
    )
    op.create_index("ix_upgrade_packages_version", "upgrade_packages", ["version"])
    op.create_table(
        "upgrade_rollouts",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("target_version", sa.String(64), nullable=False),
        sa.Column("waves", sa.String(200), nullable=False),
        sa.Column("max_failures", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current_wave", sa.Integer, nullable=False),
        sa.Column("window_start", sa.String(5), nullable=False, server_default=""),
        sa.Column("window_end", sa.String(5), nullable=False, server_default=""),
        sa.Column("stop_reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_upgrade_rollouts"),
    )
    op.create_table(
        "upgrade_targets",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("outdated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("edge_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("message", sa.String(500), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "hospital_id", name="pk_upgrade_targets"),
    )
    op.create_table(
        "upgrade_edges",
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("edge_id", sa.String(128), nullable=False),
        sa.Column("software_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("contract_release", sa.String(64), nullable=False, server_default=""),
        sa.Column("standby_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("pending_package_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("hospital_id", "edge_id", name="pk_upgrade_edges"),
    )
    op.create_table(
        "upgrade_reports",
        sa.Column("report_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("edge_id", sa.String(128), nullable=False),
        sa.Column("rollout_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("message", sa.String(500), nullable=False, server_default=""),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("package_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("package_kind", sa.String(8), nullable=False, server_default=""),
        sa.Column("attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("report_id", name="pk_upgrade_reports"),
    )
    op.create_index("ix_upgrade_reports_hospital_id", "upgrade_reports", ["hospital_id"])


def downgrade() -> None:
    """Drop the upgrade tables."""
    op.drop_index("ix_upgrade_reports_hospital_id", "upgrade_reports")
    op.drop_table("upgrade_reports")
    op.drop_table("upgrade_edges")
    op.drop_table("upgrade_targets")
    op.drop_table("upgrade_rollouts")
    op.drop_index("ix_upgrade_packages_version", "upgrade_packages")
    op.drop_table("upgrade_packages")
