"""Alembic migration environment of the reconciliation tables (control database)."""
