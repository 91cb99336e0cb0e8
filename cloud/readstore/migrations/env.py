"""Alembic environment of the public read store; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.readstore._schema import METADATA

run_migration_env(METADATA)
