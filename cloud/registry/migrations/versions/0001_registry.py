"""Registry: releases, labels, tokens, audit log and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the registry tables."""
    op.create_table(
        "registry_releases",
        sa.Column("release_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("major", sa.Integer, nullable=False),
        sa.Column("digest_sha256", sa.String(64), nullable=False),
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
        sa.PrimaryKeyConstraint("release_id", name="pk_registry_releases"),
        sa.UniqueConstraint("version", name="uq_registry_releases_version"),
        sa.UniqueConstraint("digest_sha256", name="uq_registry_releases_digest_sha256"),
    )
    op.create_table(
        "registry_labels",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_registry_labels"),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["registry_releases.release_id"],
            name="fk_registry_labels_release_id_registry_releases",
        ),
    )
    op.create_index("ix_registry_labels_release_id", "registry_labels", ["release_id"])
    op.create_table(
        "registry_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_id", name="pk_registry_tokens"),
    )
    op.create_table(
        "registry_audit",
        sa.Column("audit_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("details_json", sa.Text, nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("audit_id", name="pk_registry_audit"),
    )
    op.create_table(
        "registry_requests",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_registry_requests"),
    )


def downgrade() -> None:
    """Drop the registry tables."""
    op.drop_table("registry_requests")
    op.drop_table("registry_audit")
    op.drop_table("registry_tokens")
    op.drop_index("ix_registry_labels_release_id", "registry_labels")
    op.drop_table("registry_labels")
    op.drop_table("registry_releases")
