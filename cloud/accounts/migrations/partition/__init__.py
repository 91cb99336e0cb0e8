"""Alembic migration environment of the account tables in every partition database."""
