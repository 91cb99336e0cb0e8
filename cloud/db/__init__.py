"""Database plumbing shared by the cloud's stores: async engines and Alembic migrations."""

from __future__ import annotations

from cloud.db._engine import (
    DatabaseError,
    create_engine,
    metadata,
    migrate,
    run_migration_env,
    sqlite_url,
    writer_turn,
)

__all__ = [
    "DatabaseError",
    "create_engine",
    "metadata",
    "migrate",
    "run_migration_env",
    "sqlite_url",
    "writer_turn",
]
