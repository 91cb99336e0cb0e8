"""Public read store: hospitals, reference data, sync state.

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
    """Create the read store's tables."""
    op.create_table(
        "rs_departments",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("department_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("content_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("bucket_key", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent_department_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("location", sa.String(length=500), server_default="", nullable=False),
        sa.Column("display_order", sa.Integer(), server_default="0", nullable=False),
        sa.Column("bookable", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "department_id", name=op.f("pk_rs_departments")),
    )
    with op.batch_alter_table("rs_departments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rs_departments_parent", ["hospital_id", "parent_department_id"], unique=False
        )

    op.create_table(
        "rs_doctor_departments",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("doctor_id", sa.String(length=128), nullable=False),
        sa.Column("department_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint(
            "hospital_id", "doctor_id", "department_id", name=op.f("pk_rs_doctor_departments")
        ),
    )
    with op.batch_alter_table("rs_doctor_departments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rs_doctor_departments_department", ["hospital_id", "department_id"], unique=False
        )

    op.create_table(
        "rs_doctors",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("doctor_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("content_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("bucket_key", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Integer(), server_default="0", nullable=False),
        sa.Column("title_text", sa.String(length=200), server_default="", nullable=False),
        sa.Column("specialty", sa.Text(), server_default="", nullable=False),
        sa.Column("introduction", sa.Text(), server_default="", nullable=False),
        sa.Column("photo_url", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("bookable", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "doctor_id", name=op.f("pk_rs_doctors")),
    )
    op.create_table(
        "rs_hospitals",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("aliases", sa.Text(), server_default="[]", nullable=False),
        sa.Column("grade", sa.String(length=50), server_default="", nullable=False),
        sa.Column("region_code", sa.String(length=12), server_default="", nullable=False),
        sa.Column("address", sa.String(length=500), server_default="", nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lng", sa.Float(), nullable=True),
        sa.Column("public_phone", sa.String(length=50), server_default="", nullable=False),
        sa.Column(
            "time_zone", sa.String(length=64), server_default="Asia/Shanghai", nullable=False
        ),
        sa.Column("features", sa.String(length=200), server_default=",", nullable=False),
        sa.Column("notice", sa.Text(), server_default="", nullable=False),
        sa.Column("search_aliases", sa.Text(), server_default="", nullable=False),
        sa.Column("name_initials", sa.String(length=200), server_default="", nullable=False),
        sa.Column("alias_initials", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", name=op.f("pk_rs_hospitals")),
    )
    op.create_table(
        "rs_schedules",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("content_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("bucket_key", sa.BigInteger(), nullable=False),
        sa.Column("department_id", sa.String(length=128), nullable=False),
        sa.Column("doctor_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("clinic_type", sa.Integer(), server_default="0", nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("period", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_minute", sa.Integer(), nullable=True),
        sa.Column("end_minute", sa.Integer(), nullable=True),
        sa.Column("location", sa.String(length=500), server_default="", nullable=False),
        sa.Column("fee_units", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("fee_nanos", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fee_currency", sa.String(length=3), server_default="CNY", nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("slot_mode", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("remaining", sa.Integer(), server_default="0", nullable=False),
        sa.Column("release_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "schedule_id", name=op.f("pk_rs_schedules")),
    )
    with op.batch_alter_table("rs_schedules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rs_schedules_department", ["hospital_id", "department_id", "date"], unique=False
        )
        batch_op.create_index(
            "ix_rs_schedules_doctor", ["hospital_id", "doctor_id", "date"], unique=False
        )

    op.create_table(
        "rs_slots",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("slot_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("content_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("bucket_key", sa.BigInteger(), nullable=False),
        sa.Column("schedule_id", sa.String(length=128), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("remaining", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ticket_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fee_units", sa.BigInteger(), nullable=True),
        sa.Column("fee_nanos", sa.Integer(), nullable=True),
        sa.Column("fee_currency", sa.String(length=3), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "slot_id", name=op.f("pk_rs_slots")),
    )
    with op.batch_alter_table("rs_slots", schema=None) as batch_op:
        batch_op.create_index("ix_rs_slots_schedule", ["hospital_id", "schedule_id"], unique=False)

    op.create_table(
        "rs_sync_hospitals",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_drift_check", sa.DateTime(timezone=True), nullable=True),
        sa.Column("drift_result", sa.String(length=500), server_default="", nullable=False),
        sa.Column("drift_buckets", sa.Integer(), server_default="0", nullable=False),
        sa.Column("flag", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("hospital_id", name=op.f("pk_rs_sync_hospitals")),
    )
    op.create_table(
        "rs_sync_kinds",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_changes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_snapshot", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "kind", name=op.f("pk_rs_sync_kinds")),
    )
    op.create_table(
        "rs_tombstones",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", "kind", "entity_id", name=op.f("pk_rs_tombstones")),
    )


def downgrade() -> None:
    """Drop the read store's tables."""
    op.drop_table("rs_tombstones")
    op.drop_table("rs_sync_kinds")
    op.drop_table("rs_sync_hospitals")
    with op.batch_alter_table("rs_slots", schema=None) as batch_op:
        batch_op.drop_index("ix_rs_slots_schedule")

    op.drop_table("rs_slots")
    with op.batch_alter_table("rs_schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_rs_schedules_doctor")
        batch_op.drop_index("ix_rs_schedules_department")

    op.drop_table("rs_schedules")
    op.drop_table("rs_hospitals")
    op.drop_table("rs_doctors")
    with op.batch_alter_table("rs_doctor_departments", schema=None) as batch_op:
        batch_op.drop_index("ix_rs_doctor_departments_department")

    op.drop_table("rs_doctor_departments")
    with op.batch_alter_table("rs_departments", schema=None) as batch_op:
        batch_op.drop_index("ix_rs_departments_parent")

    op.drop_table("rs_departments")
