"""Tables of the public read store: hospitals, their reference data, and sync state.

The tables are created and changed only by the migrations in ``migrations/versions``; this
module describes them for queries and must match the newest migration (a test checks).

Every reference-data row carries the hospital.v1 ``version`` it was written at (the change
feed's guard: a change is applied only when its version is higher), its 32-byte
``content_digest`` (compared with the edge's by ``GetDirectoryDigest``) and ``bucket_key``,
the first four bytes of SHA-256 of its id as an unsigned integer, so that "the bucket of this
row for N buckets" is ``bucket_key % N`` in SQL (see `mesh.digest.bucket_of`).
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.db import metadata

__all__ = [
    "DEPARTMENTS",
    "DOCTORS",
    "DOCTOR_DEPARTMENTS",
    "HOSPITALS",
    "METADATA",
    "SCHEDULES",
    "SLOTS",
    "SYNC_HOSPITALS",
    "SYNC_KINDS",
    "TOMBSTONES",
]

METADATA = metadata()

ID = 128
"""Longest entity id a hospital may publish (checked before anything is written)."""

HOSPITALS = sa.Table(
    "rs_hospitals",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("aliases", sa.Text, nullable=False, server_default="[]"),  # JSON list
    sa.Column("grade", sa.String(50), nullable=False, server_default=""),
    sa.Column("region_code", sa.String(12), nullable=False, server_default=""),
    sa.Column("address", sa.String(500), nullable=False, server_default=""),
    sa.Column("lat", sa.Float, nullable=True),
    sa.Column("lng", sa.Float, nullable=True),
    sa.Column("public_phone", sa.String(50), nullable=False, server_default=""),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="Asia/Shanghai"),
    sa.Column("features", sa.String(200), nullable=False, server_default=","),  # ",A,B,"
    sa.Column("notice", sa.Text, nullable=False, server_default=""),
    # Aliases one per line, for substring search (the name is searched in its column).
    sa.Column("search_aliases", sa.Text, nullable=False, server_default=""),
    # Pinyin initials of the name, and of the aliases one per line: what patients type.
    sa.Column("name_initials", sa.String(200), nullable=False, server_default=""),
    sa.Column("alias_initials", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _entity(name: str, id_column: str, *columns: sa.Column[object] | sa.Index) -> sa.Table:
    return sa.Table(
        name,
        METADATA,
        sa.Column("hospital_id", sa.String(64), primary_key=True),
        sa.Column(id_column, sa.String(ID), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("content_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("bucket_key", sa.BigInteger, nullable=False),
        *columns,
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )


DEPARTMENTS = _entity(
    "rs_departments",
    "department_id",
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("parent_department_id", sa.String(ID), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("location", sa.String(500), nullable=False, server_default=""),
    sa.Column("display_order", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bookable", sa.Boolean, nullable=False),
    sa.Index("ix_rs_departments_parent", "hospital_id", "parent_department_id"),
)

DOCTORS = _entity(
    "rs_doctors",
    "doctor_id",
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("title", sa.Integer, nullable=False, server_default="0"),
    sa.Column("title_text", sa.String(200), nullable=False, server_default=""),
    sa.Column("specialty", sa.Text, nullable=False, server_default=""),
    sa.Column("introduction", sa.Text, nullable=False, server_default=""),
    sa.Column("photo_url", sa.String(1000), nullable=False, server_default=""),
    sa.Column("bookable", sa.Boolean, nullable=False),
)

DOCTOR_DEPARTMENTS = sa.Table(
    "rs_doctor_departments",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("doctor_id", sa.String(ID), primary_key=True),
    sa.Column("department_id", sa.String(ID), primary_key=True),
    sa.Index("ix_rs_doctor_departments_department", "hospital_id", "department_id"),
)

SCHEDULES = _entity(
    "rs_schedules",
    "schedule_id",
    sa.Column("department_id", sa.String(ID), nullable=False),
    sa.Column("doctor_id", sa.String(ID), nullable=False, server_default=""),
    sa.Column("clinic_type", sa.Integer, nullable=False, server_default="0"),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("period", sa.Integer, nullable=False, server_default="0"),
    # Minutes after local midnight; NULL when the hospital gave no time.
    sa.Column("start_minute", sa.Integer, nullable=True),
    sa.Column("end_minute", sa.Integer, nullable=True),
    sa.Column("location", sa.String(500), nullable=False, server_default=""),
    sa.Column("fee_units", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("fee_nanos", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fee_currency", sa.String(3), nullable=False, server_default="CNY"),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("slot_mode", sa.Integer, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False, server_default="0"),
    sa.Column("remaining", sa.Integer, nullable=False, server_default="0"),
    sa.Column("release_time", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_rs_schedules_department", "hospital_id", "department_id", "date"),
    sa.Index("ix_rs_schedules_doctor", "hospital_id", "doctor_id", "date"),
)

SLOTS = _entity(
    "rs_slots",
    "slot_id",
    sa.Column("schedule_id", sa.String(ID), nullable=False),
    # The slot's local date in the hospital's zone (digest scope and ageing out).
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False, server_default="0"),
    sa.Column("remaining", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ticket_number", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fee_units", sa.BigInteger, nullable=True),
    sa.Column("fee_nanos", sa.Integer, nullable=True),
    sa.Column("fee_currency", sa.String(3), nullable=True),
    sa.Index("ix_rs_slots_schedule", "hospital_id", "schedule_id"),
)

TOMBSTONES = sa.Table(
    "rs_tombstones",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("entity_id", sa.String(ID), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
)

SYNC_HOSPITALS = sa.Table(
    "rs_sync_hospitals",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_drift_check", sa.DateTime(timezone=True), nullable=True),
    sa.Column("drift_result", sa.String(500), nullable=False, server_default=""),
    sa.Column("drift_buckets", sa.Integer, nullable=False, server_default="0"),
    sa.Column("flag", sa.String(1000), nullable=False, server_default=""),
    sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True),
)

SYNC_KINDS = sa.Table(
    "rs_sync_kinds",
    METADATA,
    sa.Column("hospital_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("watermark", sa.String(1024), nullable=False, server_default=""),
    sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_success", sa.DateTime(timezone=True), nullable=True),
    sa.Column("data_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.String(1000), nullable=False, server_default=""),
    sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_changes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_snapshot", sa.Boolean, nullable=False, server_default=sa.false()),
)
