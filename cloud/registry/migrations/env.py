"""Alembic environment of the registry database; run through ``cloud.db.migrate``."""

from __future__ import annotations

from alembic import context

from cloud.registry._schema import METADATA

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=METADATA,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
