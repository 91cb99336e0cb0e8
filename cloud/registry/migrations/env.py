"""Alembic environment of the registry database; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.registry._schema import METADATA

run_migration_env(METADATA)
