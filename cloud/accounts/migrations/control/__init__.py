"""Alembic migration environment of the apps table in the control database."""
