"""Tables of the registry database (releases, labels, tokens, audit, idempotency keys).

The tables are created and changed only by the migrations in ``migrations/versions``; this
module describes them for queries and must match the newest migration (a test checks).
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = ["AUDIT", "LABELS", "METADATA", "RELEASES", "REQUESTS", "TOKENS"]

METADATA = metadata()

RELEASES = sa.Table(
    "registry_releases",
    METADATA,
    sa.Column("release_id", sa.Integer, primary_key=True, autoincrement=True),
    # The unique constraints are what make concurrent pushes safe: exactly one insert wins.
    sa.Column("version", sa.String(128), nullable=False, unique=True),
    sa.Column("major", sa.Integer, nullable=False),
    sa.Column("digest_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("image_size", sa.BigInteger, nullable=False),
    sa.Column("lifecycle", sa.String(16), nullable=False),
    sa.Column("lifecycle_changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("approvals_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("files_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("services_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("previous_version", sa.String(128), nullable=True),
    sa.Column("changes_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("push_actor", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

LABELS = sa.Table(
    "registry_labels",
    METADATA,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column(
        "release_id",
        sa.Integer,
        sa.ForeignKey("registry_releases.release_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

TOKENS = sa.Table(
    "registry_tokens",
    METADATA,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

AUDIT = sa.Table(
    "registry_audit",
    METADATA,
    sa.Column("audit_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("details_json", sa.Text, nullable=False, server_default="{}"),
)

REQUESTS = sa.Table(
    "registry_requests",
    METADATA,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("response", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
