"""Alembic environment of a partition's fence and change log; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.partitions._schema import PARTITION_INFRA

run_migration_env(PARTITION_INFRA)
