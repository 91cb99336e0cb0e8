"""Alembic migrations of the span table."""
