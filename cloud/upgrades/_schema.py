"""Tables of edge upgrades in the fleet database: packages, rollouts, targets, edges, reports.

Created and changed only by the migrations in ``migrations/versions`` (their own Alembic
environment and version table, ``alembic_version_upgrades``, beside the credentials'); this
module describes them for queries and must match the newest migration (a test checks).
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["EDGES", "METADATA", "PACKAGES", "REPORTS", "ROLLOUTS", "TARGETS"]

METADATA = metadata()

PACKAGES = sa.Table(
    "upgrade_packages",
    METADATA,
    sa.Column("package_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("version", sa.String(64), nullable=False, index=True),
    sa.Column("base_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("base_sha256", sa.String(64), nullable=False, server_default=""),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("contract_release", sa.String(64), nullable=False),
    sa.Column("signing_key_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("file", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""Every stored package: FULL ones as published, DELTA ones computed from them."""

ROLLOUTS = sa.Table(
    "upgrade_rollouts",
    METADATA,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("target_version", sa.String(64), nullable=False),
    sa.Column("waves", sa.String(200), nullable=False),
    sa.Column("max_failures", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("current_wave", sa.Integer, nullable=False),
    sa.Column("window_start", sa.String(5), nullable=False, server_default=""),
    sa.Column("window_end", sa.String(5), nullable=False, server_default=""),
    sa.Column("stop_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""Rollouts: a target version, waves, a failure budget, a state."""

TARGETS = sa.Table(
    "upgrade_targets",
    METADATA,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("outdated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("edge_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("message", sa.String(500), nullable=False, server_default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""Each hospital of a rollout: its wave and where it stands."""

EDGES = sa.Table(
    "upgrade_edges",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("edge_id", sa.String(128), primary_key=True),
    sa.Column("software_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("contract_release", sa.String(64), nullable=False, server_default=""),
    sa.Column("standby_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("pending_package_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
)
"""What each edge last told us about itself (versions, slots, its last attempt)."""

REPORTS = sa.Table(
    "upgrade_reports",
    METADATA,
    sa.Column("report_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hospital_id", sa.String(64), nullable=False, index=True),
    sa.Column("edge_id", sa.String(128), nullable=False),
    sa.Column("rollout_id", sa.String(32), nullable=False, server_default=""),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("message", sa.String(500), nullable=False, server_default=""),
    sa.Column("version", sa.String(64), nullable=False, server_default=""),
    sa.Column("package_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("package_kind", sa.String(8), nullable=False, server_default=""),
    sa.Column("attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)
"""Every install attempt and refusal an edge reported (evidence: never rewritten)."""
