"""Accounts, sign-in challenges, sessions, patients and request outcomes.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the account tables."""
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
        sa.UniqueConstraint("phone", name="uq_accounts_phone"),
    )
    op.create_table(
        "sign_in_challenges",
        sa.Column("challenge_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("code_salt", sa.String(32), nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts_left", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("complete_request_id", sa.String(36), nullable=True),
        sa.Column("session_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("challenge_id", name="pk_sign_in_challenges"),
        sa.UniqueConstraint(
            "app_id", "phone", "request_id", name="uq_sign_in_challenges_app_id_phone_request_id"
        ),
    )
    op.create_index("ix_sign_in_challenges_phone", "sign_in_challenges", ["phone"])
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_account_id", "sessions", ["account_id"])
    op.create_table(
        "patients",
        sa.Column("patient_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("id_card_type", sa.Integer, nullable=False),
        sa.Column("id_card_number", sa.String(32), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False, server_default=""),
        sa.Column("medical_card_number", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name="pk_patients"),
        sa.UniqueConstraint(
            "account_id",
            "id_card_type",
            "id_card_number",
            name="uq_patients_account_id_id_card_type_id_card_number",
        ),
    )
    op.create_table(
        "patient_hospitals",
        sa.Column("patient_id", sa.String(32), nullable=False),
        sa.Column("hospital_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("hospital_patient_id", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(32), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "hospital_id", name="pk_patient_hospitals"),
    )
    op.create_table(
        "account_patients",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "patient_id", name="pk_account_patients"),
    )
    op.create_table(
        "account_requests",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "request_id", name="pk_account_requests"),
    )


def downgrade() -> None:
    """Drop the account tables."""
    for table in (
        "account_requests",
        "account_patients",
        "patient_hospitals",
        "patients",
        "sessions",
        "sign_in_challenges",
        "accounts",
    ):
        op.drop_table(table)
