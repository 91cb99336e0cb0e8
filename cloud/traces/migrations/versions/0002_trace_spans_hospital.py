"""Failed spans by hospital: the dashboard's recent failed calls of one hospital.

A partial index (failed spans only): successful spans, most of the table, cost no more to
write.

Revision ID: t0002
Revises: t0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index the failed spans of ``trace_spans`` by hospital and start time."""
    op.create_index(
        "ix_trace_spans_failed_hospital",
        "trace_spans",
        ["hospital_id", "start_ns"],
        sqlite_where=sa.text("code != 0"),
        postgresql_where=sa.text("code != 0"),
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_trace_spans_failed_hospital", table_name="trace_spans")
