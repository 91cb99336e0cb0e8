"""Edge upgrades, the cloud's side: the package store, rollouts in waves, the RPC handlers.

See `PackageStore` (published packages and their deltas), `Rollouts` (waves, canary,
failure budget, pause/resume/abort) and `UpgradeHandlers` (``GetUpgradeManifest``,
``DownloadUpgrade`` and the upgrade part of ``ReportHealth``). Tables live in the fleet
database under their own Alembic environment (`migrate_upgrades`).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.upgrades._bucket import ByteBucket
from cloud.upgrades._handlers import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    MIN_CHUNK,
    UpgradeHandlers,
)
from cloud.upgrades._rollouts import (
    LIVE,
    EdgeReport,
    HospitalStatus,
    RolloutInfo,
    Rollouts,
    parse_waves,
    parse_window,
)
from cloud.upgrades._store import DELTA, DOMAIN, FULL, PackageStore, StoredPackage

__all__ = [
    "DEFAULT_CHUNK",
    "DELTA",
    "DOMAIN",
    "FULL",
    "LIVE",
    "MAX_CHUNK",
    "MIN_CHUNK",
    "ByteBucket",
    "EdgeReport",
    "HospitalStatus",
    "PackageStore",
    "RolloutInfo",
    "Rollouts",
    "StoredPackage",
    "UpgradeHandlers",
    "migrate_upgrades",
    "parse_waves",
    "parse_window",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_upgrades(engine: AsyncEngine) -> None:
    """Bring the upgrade tables of the fleet database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_upgrades")
