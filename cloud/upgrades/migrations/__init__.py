"""Alembic migration environment of the upgrade tables (in the fleet database)."""
