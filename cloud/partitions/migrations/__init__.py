"""Alembic migration environments of the partition map and of every partition's database."""
