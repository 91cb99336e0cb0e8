"""Alembic migration environment of the public read store."""
