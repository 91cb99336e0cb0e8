"""Monitoring tables (in the fleet database): edge health, alerts, probe state and results."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["ALERTS", "HEALTH", "HEALTH_HISTORY", "METADATA", "PROBE_RESULTS", "PROBE_STATE"]

METADATA = metadata()

HEALTH = sa.Table(
    "edge_health",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("edge_id", sa.String(128), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("software_version", sa.String(64), nullable=False),
    sa.Column("contract_release", sa.String(64), nullable=False),
    sa.Column("report", sa.LargeBinary, nullable=False),
)
"""The latest ReportHealthRequest of each edge (serialised)."""

HEALTH_HISTORY = sa.Table(
    "edge_health_history",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hospital_id", sa.String(64), nullable=False),
    sa.Column("edge_id", sa.String(128), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("report", sa.LargeBinary, nullable=False),
    sa.Index("ix_edge_health_history_edge", "hospital_id", "edge_id", "seq"),
)
"""The last ``[health] history`` reports of each edge."""

ALERTS = sa.Table(
    "edge_alerts",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hospital_id", sa.String(64), nullable=False),
    sa.Column("edge_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
    sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_edge_alerts_open", "hospital_id", "edge_id", "kind", "cleared_at"),
)
"""Alerts: open while ``cleared_at`` is NULL; one row per raise."""

PROBE_STATE = sa.Table(
    "probe_state",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("interface", sa.String(32), primary_key=True),
    sa.Column("case_id", sa.String(128), nullable=False),
    sa.Column("good_fingerprint", sa.String(64), nullable=False),
    sa.Column("good_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""Per hospital and interface: the probed case and the fingerprint of its last good answer."""

PROBE_RESULTS = sa.Table(
    "probe_results",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hospital_id", sa.String(64), nullable=False),
    sa.Column("interface", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("case_id", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("detail", sa.String(500), nullable=False),
    sa.Index("ix_probe_results_pair", "hospital_id", "interface", "at"),
)
"""Every probe's outcome."""
