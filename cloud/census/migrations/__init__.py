"""Alembic migration environment of the field census tables."""
