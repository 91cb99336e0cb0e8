"""The partition map: partitions, their regions, the map's version, splits.

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
    """Create the map's tables."""
    op.create_table(
        "partitions",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_partitions"),
    )
    op.create_table(
        "partition_regions",
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("partition", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("region", name="pk_partition_regions"),
    )
    op.create_table(
        "partition_map",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_partition_map"),
    )
    op.create_table(
        "partition_splits",
        sa.Column("split_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_copied", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pause_seconds", sa.Float, nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("split_id", name="pk_partition_splits"),
    )


def downgrade() -> None:
    """Drop the map's tables."""
    for table in ("partition_splits", "partition_map", "partition_regions", "partitions"):
        op.drop_table(table)
