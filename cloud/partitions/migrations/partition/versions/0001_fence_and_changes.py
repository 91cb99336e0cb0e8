"""A partition's fence and its change log (filled only while a split copies it).

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
    """Create ``partition_fence`` and ``partition_changes``."""
    op.create_table(
        "partition_fence",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("partition", sa.String(32), nullable=False),
        sa.Column("fenced", sa.Boolean, nullable=False),
        sa.Column("fenced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_partition_fence"),
    )
    op.create_table(
        "partition_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("row_key", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_partition_changes"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("partition_changes")
    op.drop_table("partition_fence")
