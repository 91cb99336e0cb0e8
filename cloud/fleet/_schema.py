"""Tables of the fleet database (hospitals, front-end servers, credentials).

The tables are created and changed only by the migrations in ``migrations/versions``; this
module describes them for queries and must match the newest migration (a test checks).
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["CREDENTIALS", "METADATA"]

METADATA = metadata()

CREDENTIALS = sa.Table(
    "hospital_credentials",
    METADATA,
    sa.Column("credential_id", sa.String(32), primary_key=True),
    sa.Column("hospital_id", sa.String(64), nullable=False, index=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
