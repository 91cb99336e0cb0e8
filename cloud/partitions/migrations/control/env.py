"""Alembic environment of the partition map; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.partitions._schema import CONTROL

run_migration_env(CONTROL)
