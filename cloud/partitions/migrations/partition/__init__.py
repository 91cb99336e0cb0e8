"""Alembic migration environment of the partitions' own tables in each partition database."""
