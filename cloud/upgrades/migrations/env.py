"""Alembic environment of the upgrade tables (fleet database); run by ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.upgrades._schema import METADATA

run_migration_env(METADATA)
