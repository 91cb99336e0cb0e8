"""Alembic migration environment of the partition map (the control database)."""
