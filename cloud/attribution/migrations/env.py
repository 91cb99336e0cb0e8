"""Alembic environment of the failure table; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.attribution._schema import METADATA
from cloud.db import run_migration_env

run_migration_env(METADATA)
