"""Alembic environment of the order tables of a partition; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.orders._schema import PARTITIONED

run_migration_env(PARTITIONED)
