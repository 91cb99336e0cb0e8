"""Alembic migration environments of accounts: apps (control database), the rest (partitions)."""
