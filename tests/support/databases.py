"""Whole PostgreSQL databases for tests that need several (partitions, control): the one
helper in ``tools.scratchdb``."""

from __future__ import annotations

from tools.scratchdb import NAMES, postgres_databases, sqlite_databases

__all__ = ["NAMES", "postgres_databases", "sqlite_databases"]
