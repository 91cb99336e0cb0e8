"""The node's span table: one row per span, bounded by count and age."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["METADATA", "SPANS"]

METADATA = metadata()

SPANS = sa.Table(
    "trace_spans",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
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
    sa.Index("ix_trace_spans_trace_id", "trace_id"),
    sa.Index("ix_trace_spans_start_ns", "start_ns"),
    # Failed spans only (partial): the dashboard's recent failures of one hospital.
    sa.Index(
        "ix_trace_spans_failed_hospital",
        "hospital_id",
        "start_ns",
        sqlite_where=sa.text("code != 0"),
        postgresql_where=sa.text("code != 0"),
    ),
)
