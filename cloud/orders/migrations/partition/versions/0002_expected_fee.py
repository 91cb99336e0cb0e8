"""The fee the app showed when the patient booked (``BookAppointmentRequest.expected_fee``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``orders.expected_fee_fen`` (NULL: the app showed none)."""
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("expected_fee_fen", sa.BigInteger, nullable=True))


def downgrade() -> None:
    """Drop ``orders.expected_fee_fen``."""
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("expected_fee_fen")
