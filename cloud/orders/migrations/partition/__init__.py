"""Alembic migration environment of the order tables in every partition database."""
