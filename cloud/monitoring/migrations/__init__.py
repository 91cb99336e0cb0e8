"""Alembic migration environment of the monitoring tables."""
