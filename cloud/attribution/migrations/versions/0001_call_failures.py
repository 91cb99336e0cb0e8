"""Failed calls with their attribution (owner, reason code, hop, vendor).

Revision ID: a0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``call_failures`` with its time index."""
    op.create_table(
        "call_failures",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("hospital_id", sa.String(100), nullable=False),
        sa.Column("side", sa.String(10), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("code", sa.String(30), nullable=False),
        sa.Column("error_reason", sa.String(100), nullable=False),
        sa.Column("error_domain", sa.String(100), nullable=False),
        sa.Column("cause", sa.String(50), nullable=False),
        sa.Column("owner", sa.String(30), nullable=False),
        sa.Column("reason", sa.String(50), nullable=False),
        sa.Column("hop", sa.String(30), nullable=False),
        sa.Column("vendor", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_failures"),
    )
    op.create_index("ix_call_failures_at", "call_failures", ["at"])


def downgrade() -> None:
    """Drop ``call_failures``."""
    op.drop_table("call_failures")
