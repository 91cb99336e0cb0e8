"""Alembic environment of the reconciliation tables; run through ``cloud.db.migrate``."""

from __future__ import annotations

from cloud.db import run_migration_env
from cloud.reconcile._schema import RECONCILE

run_migration_env(RECONCILE)
