"""The report lookups table (its own database: results hold patient data, kept for a TTL)."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["LOOKUPS", "METADATA"]

METADATA = metadata()

LOOKUPS = sa.Table(
    "report_lookups",
    METADATA,
    sa.Column("lookup_key", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(64), nullable=False, unique=True),
    sa.Column("hospital_id", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result", sa.LargeBinary, nullable=True),
    sa.Column("error", sa.String(300), nullable=False),
    sa.Index("ix_report_lookups_expiry", "expires_at"),
    sa.Index("ix_report_lookups_account", "account_id", "state"),
)
"""One lookup per (account, patient at a hospital, what): PENDING until the edge pushes its
result, then DONE (with the result) or FAILED; deleted once ``expires_at`` passes."""
