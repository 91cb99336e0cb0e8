"""Alembic environment of the span table; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.traces._schema import METADATA

run_migration_env(METADATA)
