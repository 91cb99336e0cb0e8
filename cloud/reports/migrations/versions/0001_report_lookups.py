"""Report lookups.

Revision ID: r0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``report_lookups``."""
    op.create_table(
        "report_lookups",
        sa.Column("lookup_key", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(64), nullable=False, unique=True),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("error", sa.String(300), nullable=False),
    )
    op.create_index("ix_report_lookups_expiry", "report_lookups", ["expires_at"])
    op.create_index("ix_report_lookups_account", "report_lookups", ["account_id", "state"])


def downgrade() -> None:
    """Drop ``report_lookups``."""
    op.drop_table("report_lookups")
