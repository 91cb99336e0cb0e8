"""Store rows → ``hplus.cloud.v1`` messages: what patients see of hospital.v1 reference data.

Hospitals publish sessions (Schedule) divided into slots by one of several appointment rules
(``slot_mode``); patients see one shape, ``cloud.v1.Slot``, whose kind, availability, fee and
registration type are derived here, with dates and times in the hospital's own zone.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

from google.protobuf import timestamp_pb2
from google.type import latlng_pb2, timeofday_pb2

from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import common_pb2, directory_pb2

__all__ = [
    "FEATURE_ENUMS",
    "aware",
    "department",
    "doctor",
    "hospital",
    "is_available",
    "slot",
    "timestamp",
]

FEATURE_ENUMS = {
    "appointment": patient_pb2.HOSPITAL_FEATURE_APPOINTMENT,
    "payment": patient_pb2.HOSPITAL_FEATURE_PAYMENT,
    "reports": patient_pb2.HOSPITAL_FEATURE_REPORTS,
}
"""Feature names of the master data and their ``HospitalFeature`` values."""

_REGISTRATION = {
    directory_pb2.CLINIC_TYPE_GENERAL: "普通号",
    directory_pb2.CLINIC_TYPE_EXPERT: "专家号",
    directory_pb2.CLINIC_TYPE_RENOWNED_EXPERT: "知名专家号",
    directory_pb2.CLINIC_TYPE_SPECIALTY_DISEASE: "专病号",
    directory_pb2.CLINIC_TYPE_SPECIAL_NEEDS: "特需号",
    directory_pb2.CLINIC_TYPE_MULTIDISCIPLINARY: "多学科会诊",
    directory_pb2.CLINIC_TYPE_NURSE: "护理门诊",
    directory_pb2.CLINIC_TYPE_ONLINE: "互联网门诊",
    directory_pb2.CLINIC_TYPE_EMERGENCY: "急诊",
}
_PERIODS = {
    common_pb2.SESSION_PERIOD_MORNING: patient_pb2.DAY_PERIOD_MORNING,
    common_pb2.SESSION_PERIOD_AFTERNOON: patient_pb2.DAY_PERIOD_AFTERNOON,
    common_pb2.SESSION_PERIOD_EVENING: patient_pb2.DAY_PERIOD_EVENING,
    common_pb2.SESSION_PERIOD_ALL_DAY: patient_pb2.DAY_PERIOD_ALL_DAY,
}
_TITLES = {
    directory_pb2.DOCTOR_TITLE_CHIEF_PHYSICIAN: "主任医师",
    directory_pb2.DOCTOR_TITLE_ASSOCIATE_CHIEF_PHYSICIAN: "副主任医师",
    directory_pb2.DOCTOR_TITLE_ATTENDING_PHYSICIAN: "主治医师",
    directory_pb2.DOCTOR_TITLE_RESIDENT_PHYSICIAN: "住院医师",
    directory_pb2.DOCTOR_TITLE_SENIOR_NURSE: "主任护师",
}
# A session's status decides first; only an open session looks at the slot's own status.
_BY_SCHEDULE = {
    directory_pb2.SCHEDULE_STATUS_NOT_RELEASED: patient_pb2.SLOT_AVAILABILITY_NOT_YET_OPEN,
    directory_pb2.SCHEDULE_STATUS_FULL: patient_pb2.SLOT_AVAILABILITY_FULL,
    directory_pb2.SCHEDULE_STATUS_CLOSED: patient_pb2.SLOT_AVAILABILITY_CLOSED,
    directory_pb2.SCHEDULE_STATUS_SUSPENDED: patient_pb2.SLOT_AVAILABILITY_SUSPENDED,
}
_BY_SLOT = {
    directory_pb2.SLOT_STATUS_FREE: patient_pb2.SLOT_AVAILABILITY_AVAILABLE,
    directory_pb2.SLOT_STATUS_BUSY: patient_pb2.SLOT_AVAILABILITY_FULL,
    directory_pb2.SLOT_STATUS_BUSY_TENTATIVE: patient_pb2.SLOT_AVAILABILITY_FULL,
    directory_pb2.SLOT_STATUS_BUSY_UNAVAILABLE: patient_pb2.SLOT_AVAILABILITY_CLOSED,
}
OPEN_SCHEDULE = (directory_pb2.SCHEDULE_STATUS_OPEN, directory_pb2.SCHEDULE_STATUS_UNSPECIFIED)
"""Session states in which a free slot is available (the SQL filter uses the same rule)."""


def is_available(schedule_status: int, slot_status: int) -> bool:
    """Whether a slot is AVAILABLE: its session open and the slot free."""
    return schedule_status in OPEN_SCHEDULE and slot_status == directory_pb2.SLOT_STATUS_FREE


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns; we store UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of an (aware or UTC-naive) datetime."""
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(aware(value) or value)
    return out


def hospital(row: Any, *, online: bool) -> patient_pb2.Hospital:
    """A ``rs_hospitals`` row as patients see it."""
    out = patient_pb2.Hospital(
        hospital_id=row.hospital_id,
        name=row.name,
        aliases=json.loads(row.aliases),
        grade=row.grade,
        region_code=row.region_code,
        address=row.address,
        public_phone=row.public_phone,
        time_zone=row.time_zone,
        features=[FEATURE_ENUMS[f] for f in row.features.strip(",").split(",") if f],
        online_booking_available=online,
        notice=row.notice,
    )
    if row.lat is not None and row.lng is not None:
        out.location.CopyFrom(latlng_pb2.LatLng(latitude=row.lat, longitude=row.lng))
    return out


def department(row: Any) -> patient_pb2.Department:
    """A ``rs_departments`` row."""
    return patient_pb2.Department(
        department_id=row.department_id,
        hospital_id=row.hospital_id,
        name=row.name,
        parent_department_id=row.parent_department_id,
        description=row.description,
        location=row.location,
        display_order=row.display_order,
    )


def doctor(row: Any, department_ids: list[str]) -> patient_pb2.Doctor:
    """A ``rs_doctors`` row with the departments it holds clinics in."""
    return patient_pb2.Doctor(
        doctor_id=row.doctor_id,
        hospital_id=row.hospital_id,
        department_ids=department_ids,
        name=row.name,
        title=row.title_text or _TITLES.get(row.title, ""),
        specialty=row.specialty,
        introduction=row.introduction,
        photo_uri=row.photo_url if row.photo_url.startswith("https://") else "",
    )


def _set_tod(out: timeofday_pb2.TimeOfDay, minutes: int) -> None:
    out.hours, out.minutes = divmod(minutes, 60)


def _set_local(out: timeofday_pb2.TimeOfDay, value: dt.datetime, zone: zoneinfo.ZoneInfo) -> None:
    local = (aware(value) or value).astimezone(zone)
    out.hours, out.minutes, out.seconds = local.hour, local.minute, local.second


def _kind(slot_mode: int, period: int) -> patient_pb2.SlotKind.ValueType:
    if slot_mode == directory_pb2.SLOT_MODE_TIMED:
        return patient_pb2.SLOT_KIND_TIMED
    if slot_mode == directory_pb2.SLOT_MODE_NUMBERED:
        return patient_pb2.SLOT_KIND_QUEUE_NUMBER
    if period == common_pb2.SESSION_PERIOD_ALL_DAY:
        return patient_pb2.SLOT_KIND_FULL_DAY
    return patient_pb2.SLOT_KIND_HALF_DAY


def slot(row: Any, zone: zoneinfo.ZoneInfo) -> patient_pb2.Slot:
    """A slot joined with its session (columns ``s_*`` of the schedule) as patients see it.

    Fields are set one by one rather than passed as nested messages: a ListSlots page
    converts hundreds of slots, and this is three times faster.
    """
    kind = _kind(row.s_slot_mode, row.s_period)
    unlimited = row.s_slot_mode == directory_pb2.SLOT_MODE_UNLIMITED
    if is_available(row.s_status, row.status):
        availability = patient_pb2.SLOT_AVAILABILITY_AVAILABLE
    else:
        availability = _BY_SCHEDULE.get(
            row.s_status, _BY_SLOT.get(row.status, patient_pb2.SLOT_AVAILABILITY_FULL)
        )
        if availability == patient_pb2.SLOT_AVAILABILITY_AVAILABLE:
            availability = patient_pb2.SLOT_AVAILABILITY_FULL  # free slot, session not open
    out = patient_pb2.Slot(
        slot_id=row.slot_id,
        hospital_id=row.hospital_id,
        department_id=row.s_department_id,
        doctor_id=row.s_doctor_id,
        kind=kind,
        period=_PERIODS.get(row.s_period, patient_pb2.DAY_PERIOD_UNSPECIFIED),
        availability=availability,
        capacity=0 if unlimited else row.capacity,
        remaining=0 if unlimited else row.remaining,
        unlimited=unlimited,
        registration_type=_REGISTRATION.get(row.s_clinic_type, ""),
    )
    day = row.s_date if isinstance(row.s_date, dt.date) else dt.date.fromisoformat(row.s_date)
    date = out.date
    date.year, date.month, date.day = day.year, day.month, day.day
    whole = kind in (patient_pb2.SLOT_KIND_HALF_DAY, patient_pb2.SLOT_KIND_FULL_DAY)
    if whole and row.s_start_minute is not None:
        _set_tod(out.start_time, row.s_start_minute)
        if row.s_end_minute is not None:
            _set_tod(out.end_time, row.s_end_minute)
    else:
        if row.start_at is not None:
            _set_local(out.start_time, row.start_at, zone)
        if row.end_at is not None:
            _set_local(out.end_time, row.end_at, zone)
    fee = out.fee
    if row.fee_units is not None:
        fee.currency_code, fee.units, fee.nanos = row.fee_currency, row.fee_units, row.fee_nanos
    else:
        fee.currency_code = row.s_fee_currency
        fee.units, fee.nanos = row.s_fee_units, row.s_fee_nanos
    if (
        availability == patient_pb2.SLOT_AVAILABILITY_NOT_YET_OPEN
        and row.s_release_time is not None
    ):
        out.booking_opens_time.CopyFrom(timestamp(row.s_release_time))
    return out
