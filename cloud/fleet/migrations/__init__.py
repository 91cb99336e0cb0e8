"""Alembic migration environment of the fleet database."""
