"""What the node watches on the hospitals: edge health with alerts, and business probes.

`HealthMonitor` serves ``EdgeService.ReportHealth``: the latest report per edge and a
bounded history in the fleet database, alerts on per-hospital thresholds (each transition
logged once). `Prober` replays known reads through the tunnels on a schedule and keeps
their outcomes; `read_availability` and `read_health` are what ``hplus cloud probes`` and
``hplus cloud health`` show.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.monitoring._health import (
    Alert,
    EdgeHealth,
    HealthMonitor,
    evaluate,
    read_alerts,
    read_health,
)
from cloud.monitoring._probes import (
    INTERFACES,
    Availability,
    Prober,
    ProbeResult,
    fingerprint,
    read_availability,
)

__all__ = [
    "INTERFACES",
    "Alert",
    "Availability",
    "EdgeHealth",
    "HealthMonitor",
    "ProbeResult",
    "Prober",
    "evaluate",
    "fingerprint",
    "migrate_monitoring",
    "read_alerts",
    "read_availability",
    "read_health",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_monitoring(engine: AsyncEngine) -> None:
    """Bring the monitoring tables (in the fleet database) to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_monitoring")
