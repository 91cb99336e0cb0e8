"""Alembic migrations of the failure table."""
