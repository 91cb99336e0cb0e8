"""Alembic migration environment of the registry database."""
