"""The node's failure table: one row per failed call, with its attribution."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["FAILURES", "METADATA"]

METADATA = metadata()

FAILURES = sa.Table(
    "call_failures",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
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
    sa.Index("ix_call_failures_at", "at"),
)
