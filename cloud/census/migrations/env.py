"""Alembic environment of the census tables; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.census._schema import METADATA
from cloud.db import run_migration_env

run_migration_env(METADATA)
