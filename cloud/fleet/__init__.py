"""Fleet: hospitals, their front-end servers and credentials (the fleet database)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.fleet._credentials import (
    CredentialError,
    CredentialInfo,
    CredentialStore,
    IssuedCredential,
)

__all__ = [
    "CredentialError",
    "CredentialInfo",
    "CredentialStore",
    "IssuedCredential",
    "migrate_fleet",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_fleet(engine: AsyncEngine) -> None:
    """Bring the fleet database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_fleet")
