"""Alembic environment of the apps table; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.accounts._schema import CONTROL
from cloud.db import run_migration_env

run_migration_env(CONTROL)
