"""Alembic environment of the account tables of a partition; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.accounts._schema import PARTITIONED
from cloud.db import run_migration_env

run_migration_env(PARTITIONED)
