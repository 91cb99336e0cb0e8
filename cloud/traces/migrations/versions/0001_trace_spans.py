"""Span table of the node's embedded trace store.

Revision ID: t0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``trace_spans`` with its trace id and start time indexes."""
    op.create_table(
        "trace_spans",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_span_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("hospital_id", sa.String(100), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("code", sa.Integer, nullable=False),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trace_spans"),
    )
    op.create_index("ix_trace_spans_trace_id", "trace_spans", ["trace_id"])
    op.create_index("ix_trace_spans_start_ns", "trace_spans", ["start_ns"])


def downgrade() -> None:
    """Drop ``trace_spans``."""
    op.drop_table("trace_spans")
