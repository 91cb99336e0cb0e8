"""Field census counts.

Revision ID: c0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``field_census`` and ``field_census_sampled``."""
    op.create_table(
        "field_census",
        sa.Column("rpc", sa.String(300), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("contract_release", sa.String(64), nullable=False),
        sa.Column("field_path", sa.String(500), nullable=False),
        sa.Column("messages", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "rpc", "direction", "contract_release", "field_path", name="pk_field_census"
        ),
    )
    op.create_table(
        "field_census_sampled",
        sa.Column("rpc", sa.String(300), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("contract_release", sa.String(64), nullable=False),
        sa.Column("sampled", sa.BigInteger, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "rpc", "direction", "contract_release", name="pk_field_census_sampled"
        ),
    )


def downgrade() -> None:
    """Drop the census tables."""
    op.drop_table("field_census_sampled")
    op.drop_table("field_census")
