"""Hospital credentials for tunnels and edge calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``hospital_credentials``."""
    op.create_table(
        "hospital_credentials",
        sa.Column("credential_id", sa.String(32), nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("credential_id", name="pk_hospital_credentials"),
    )
    op.create_index("ix_hospital_credentials_hospital_id", "hospital_credentials", ["hospital_id"])


def downgrade() -> None:
    """Drop ``hospital_credentials``."""
    op.drop_index("ix_hospital_credentials_hospital_id", "hospital_credentials")
    op.drop_table("hospital_credentials")
