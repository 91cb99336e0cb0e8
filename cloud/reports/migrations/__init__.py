"""Alembic migration environment of the report lookups."""
