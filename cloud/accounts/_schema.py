"""Tables of accounts: apps in the control database, everything else in the partitions.

The tables are created and changed only by the migrations in ``migrations/control`` and
``migrations/partition``; this module describes them for queries and must match the newest
migration (a test checks).

Every partitioned table has a ``region`` (the partition it lives in is the map's for that
region) and no foreign key, so a split can copy it table by table. Ids that route carry
their region as a prefix (``44-3f9c…``): an account's and its sessions' is the region of
its phone, a patient's the region of its resident ID card (else its account's).
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = [
    "ACCOUNTS",
    "ACCOUNT_PATIENTS",
    "APPS",
    "CHALLENGES",
    "CONTROL",
    "IDEMPOTENCY",
    "PARTITIONED",
    "PATIENTS",
    "PATIENT_HOSPITALS",
    "SESSIONS",
]

CONTROL = metadata()

APPS = sa.Table(
    "apps",
    CONTROL,
    sa.Column("app_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("rate", sa.Float, nullable=False),
    sa.Column("burst", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
"""Patient apps and their keys (only the secret's hash), with each app's rate limit."""

PARTITIONED = metadata()

ACCOUNTS = sa.Table(
    "accounts",
    PARTITIONED,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False, unique=True),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""One account per mobile number (E.164), created by its first sign-in through ``app_id``."""

CHALLENGES = sa.Table(
    "sign_in_challenges",
    PARTITIONED,
    sa.Column("challenge_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False, index=True),
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
    sa.UniqueConstraint("app_id", "phone", "request_id"),
)
"""One-time codes sent (only a salted hash of each), their attempts and what they opened:
``open``, ``used`` (``session_id``) or ``burned`` (attempts exhausted)."""

SESSIONS = sa.Table(
    "sessions",
    PARTITIONED,
    sa.Column("session_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("account_id", sa.String(32), nullable=False, index=True),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
"""Access tokens (only the secret's hash), checked on every call."""

PATIENTS = sa.Table(
    "patients",
    PARTITIONED,
    sa.Column("patient_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("id_card_type", sa.Integer, nullable=False),
    sa.Column("id_card_number", sa.String(32), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False, server_default=""),
    sa.Column("medical_card_number", sa.String(32), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("account_id", "id_card_type", "id_card_number"),
)
"""A patient an account may act for, in the patient's region (one row per account)."""

PATIENT_HOSPITALS = sa.Table(
    "patient_hospitals",
    PARTITIONED,
    sa.Column("patient_id", sa.String(32), primary_key=True),
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("hospital_patient_id", sa.String(64), nullable=False),
    sa.Column("app_id", sa.String(32), nullable=False),
    sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
)
"""The hospitals that confirmed a patient, with each one's own patient id."""

ACCOUNT_PATIENTS = sa.Table(
    "account_patients",
    PARTITIONED,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("patient_id", sa.String(32), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
)
"""Which patients an account has, in the account's region (the patients may live in
others)."""

IDEMPOTENCY = sa.Table(
    "account_requests",
    PARTITIONED,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("outcome", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""The outcome of each write by its ``request_id`` (a response, or a hospital's refusal as a
``google.rpc.Status``), kept at least 7 days, in the account's region."""
