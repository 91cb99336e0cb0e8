"""Reads of the public read store for the patient API, answered as ``hplus.cloud.v1`` messages.

Every list is keyset-paginated: a page ends with an opaque cursor naming the last row's sort
key, and the next page starts after it, so pages stay consistent and cheap however deep they
go. The patient API wraps the cursor in its own AIP-158 page token (bound to the filter,
with an expiry); this module only checks that a cursor is one it made.

Reads go to a current replica when there is one (`ReplicaSet.read`), never to a hospital.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import json
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from cloud.readstore import _convert as convert
from cloud.readstore._convert import OPEN_SCHEDULE
from cloud.readstore._replicas import ReplicaSet
from cloud.readstore._schema import (
    DEPARTMENTS,
    DOCTOR_DEPARTMENTS,
    DOCTORS,
    HOSPITALS,
    SCHEDULES,
    SLOTS,
    SYNC_KINDS,
)
from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import directory_pb2

__all__ = [
    "MAX_SLOT_DAYS",
    "DepartmentPage",
    "DoctorPage",
    "HospitalPage",
    "OnlineCheck",
    "QueryError",
    "ReadQueries",
    "SlotPage",
    "UnknownHospital",
]

MAX_SLOT_DAYS = 31
"""Longest ListSlots date range: ``end_date`` at most this many days after ``start_date``."""
AVAILABLE_DAYS = 14
"""How far ahead ``only_with_available_slots`` looks."""
MAX_LIMIT = 500
"""Largest page."""

OnlineCheck = Callable[[Sequence[str]], Awaitable[set[str]]]
"""Which of these hospitals have a front-end server connected right now (from presence)."""


_SAME_SCHEDULE = sa.and_(
    SLOTS.c.hospital_id == SCHEDULES.c.hospital_id,
    SLOTS.c.schedule_id == SCHEDULES.c.schedule_id,
)


# What `convert.slot` reads: a page has hundreds of rows, so only these are fetched.
_SLOT_COLUMNS = [
    *(SLOTS.c[n] for n in ("hospital_id", "slot_id", "start_at", "end_at", "status", "capacity",
                           "remaining", "fee_units", "fee_nanos", "fee_currency")),
    *(SCHEDULES.c[n].label(f"s_{n}") for n in (
        "department_id", "doctor_id", "clinic_type", "date", "period", "start_minute",
        "end_minute", "fee_units", "fee_nanos", "fee_currency", "status", "slot_mode",
        "release_time")),
]  # fmt: skip


def _header_columns(hospital_id: str, kind: int) -> tuple[Any, Any]:
    """Scalar subqueries of the hospital's zone and a kind's data_time (labelled ``h_*``).

    Added to a list's own SELECT they cost no round trip (PostgreSQL runs uncorrelated
    scalar subqueries once per statement).
    """
    zone = (
        sa.select(HOSPITALS.c.time_zone)
        .where(HOSPITALS.c.hospital_id == hospital_id)
        .scalar_subquery()
        .label("h_zone")
    )
    data_time = (
        sa.select(SYNC_KINDS.c.data_time)
        .where(SYNC_KINDS.c.hospital_id == hospital_id, SYNC_KINDS.c.kind == kind)
        .scalar_subquery()
        .label("h_data_time")
    )
    return zone, data_time


@functools.lru_cache(maxsize=16)
def _slot_statement(department: bool, doctor: bool, available: bool, after: bool) -> Any:
    """The ListSlots SELECT for one shape of filters, built once.

    Bound parameters: ``h``, ``start``, ``end``, ``n``, ``dep``, ``doc``, and ``k_*`` for
    the cursor. Built once per shape because building a statement (and its cache key)
    costs more than running it on a hot read path.
    """
    s, sl = SCHEDULES, SLOTS
    h = sa.bindparam("h", type_=sa.String)
    zone = sa.select(HOSPITALS.c.time_zone).where(HOSPITALS.c.hospital_id == h)
    data_time = sa.select(SYNC_KINDS.c.data_time).where(
        SYNC_KINDS.c.hospital_id == h, SYNC_KINDS.c.kind == directory_pb2.ENTITY_KIND_SLOT
    )
    stmt = (
        sa.select(
            *_SLOT_COLUMNS,
            zone.scalar_subquery().label("h_zone"),
            data_time.scalar_subquery().label("h_data_time"),
        )
        .select_from(sl.join(s, _SAME_SCHEDULE))
        .where(
            s.c.hospital_id == h,
            s.c.date >= sa.bindparam("start", type_=sa.Date),
            s.c.date <= sa.bindparam("end", type_=sa.Date),
        )
        .order_by(s.c.date, sl.c.start_at, s.c.doctor_id, sl.c.slot_id)
        .limit(sa.bindparam("n", type_=sa.Integer))
    )
    if department:
        stmt = stmt.where(s.c.department_id == sa.bindparam("dep", type_=sa.String))
    if doctor:
        stmt = stmt.where(s.c.doctor_id == sa.bindparam("doc", type_=sa.String))
    if available:
        stmt = stmt.where(
            s.c.status.in_(OPEN_SCHEDULE), sl.c.status == directory_pb2.SLOT_STATUS_FREE
        )
    if after:
        key = sa.tuple_(
            sa.bindparam("k_date", type_=sa.Date),
            sa.bindparam("k_start", type_=sa.DateTime(timezone=True)),
            sa.bindparam("k_doc", type_=sa.String),
            sa.bindparam("k_slot", type_=sa.String),
        )
        stmt = stmt.where(sa.tuple_(s.c.date, sl.c.start_at, s.c.doctor_id, sl.c.slot_id) > key)
    return stmt


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _as_of(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    return convert.timestamp(value) if value is not None else None


class QueryError(Exception):
    """A read's arguments are invalid (maps to INVALID_ARGUMENT with a field violation).

    Args:
        field: the request field at fault (``page_token``, ``end_date``…).
        message: what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownHospital(Exception):
    """No hospital has this id (maps to NOT_FOUND).

    Args:
        hospital_id: the id asked for.
    """

    def __init__(self, hospital_id: str) -> None:
        super().__init__(f"no hospital with id {hospital_id!r}")
        self.hospital_id = hospital_id


@dataclasses.dataclass(frozen=True)
class HospitalPage:
    """A page of SearchHospitals."""

    hospitals: list[patient_pb2.Hospital]
    """Best match first."""
    next_cursor: str
    """Cursor of the next page; "" on the last."""
    total_size: int
    """Matching hospitals over all pages."""


@dataclasses.dataclass(frozen=True)
class DepartmentPage:
    """A page of ListDepartments."""

    departments: list[patient_pb2.Department]
    """In the hospital's display order."""
    next_cursor: str
    """Cursor of the next page; "" on the last."""
    as_of: timestamp_pb2.Timestamp | None
    """When departments were last synchronised; ``None`` if never."""


@dataclasses.dataclass(frozen=True)
class DoctorPage:
    """A page of ListDoctors."""

    doctors: list[patient_pb2.Doctor]
    """By doctor id."""
    next_cursor: str
    """Cursor of the next page; "" on the last."""
    as_of: timestamp_pb2.Timestamp | None
    """When doctors were last synchronised; ``None`` if never."""


@dataclasses.dataclass(frozen=True)
class SlotPage:
    """A page of ListSlots."""

    slots: list[patient_pb2.Slot]
    """By date, start time, doctor."""
    next_cursor: str
    """Cursor of the next page; "" on the last."""
    as_of: timestamp_pb2.Timestamp | None
    """When slots were last synchronised; ``None`` if never."""


def _encode(kind: str, key: Sequence[Any]) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(kind: str, cursor: str, types: Sequence[type]) -> list[Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise QueryError("page_token", "is not a token this server issued") from None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != kind
        or not all(isinstance(v, t) for v, t in zip(value[1:], types, strict=True))
    ):
        raise QueryError("page_token", "belongs to another query")
    return value[1:]


def _limit(limit: int) -> int:
    if limit < 0:
        raise QueryError("page_size", "must not be negative")
    return min(limit or 50, MAX_LIMIT)


def _like(text: str) -> str:
    """``%text%`` for LIKE, with the wildcards in ``text`` escaped by backslashes."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ReadQueries:
    """The read side of the store: hospitals, departments, doctors, slots.

    Args:
        replicas: the store's engines (reads use a current replica, else the primary).
        online: which hospitals are connected now, for ``online_booking_available``;
            ``None``: none are.
    """

    def __init__(self, replicas: ReplicaSet, *, online: OnlineCheck | None = None) -> None:
        self._replicas = replicas
        self._online = online

    async def _header(self, conn: Any, hospital_id: str, kind: int) -> tuple[Any, Any]:
        """The hospital's zone and the kind's data_time; raises UnknownHospital."""
        zone, data_time = _header_columns(hospital_id, kind)
        row = (await conn.execute(sa.select(zone, data_time))).first()
        if row is None or row.h_zone is None:
            raise UnknownHospital(hospital_id)
        return _zone(row.h_zone), _as_of(row.h_data_time)

    async def search_hospitals(
        self,
        *,
        query: str = "",
        region_code: str = "",
        features: Sequence[str] = (),
        limit: int = 0,
        cursor: str = "",
    ) -> HospitalPage:
        """Hospitals matching all the filters, name matches first.

        Args:
            query: matched against names and aliases (substring) and their pinyin initials.
            region_code: GB/T 2260 code prefix.
            features: feature names (``appointment``, ``payment``, ``reports``) all required.
            limit: page size (0: 50; at most 500).
            cursor: ``next_cursor`` of the previous page.

        Raises:
            QueryError: a filter or the cursor is invalid.
        """
        size = _limit(limit)
        after = _decode("h", cursor, (int, str))
        q = query.strip().lower()
        if len(q) > 100:
            raise QueryError("query", "longer than 100 characters")
        if region_code and not (region_code.isdigit() and len(region_code) <= 6):
            raise QueryError("region_code", "must be 1-6 digits (a GB/T 2260 code prefix)")
        filters: list[sa.ColumnElement[bool]] = []
        for f in features:
            if f not in convert.FEATURE_ENUMS:
                raise QueryError("features", f"unknown feature {f!r}")
            filters.append(HOSPITALS.c.features.like(_like(f",{f},"), escape="\\"))
        if region_code:
            filters.append(HOSPITALS.c.region_code.like(f"{region_code}%"))
        rank: sa.ColumnElement[int]
        if q:
            pattern = _like(q)
            by_name = sa.or_(
                HOSPITALS.c.name.ilike(pattern, escape="\\"),
                HOSPITALS.c.name_initials.like(pattern, escape="\\"),
            )
            by_alias = sa.or_(
                HOSPITALS.c.search_aliases.ilike(pattern, escape="\\"),
                HOSPITALS.c.alias_initials.like(pattern, escape="\\"),
            )
            filters.append(sa.or_(by_name, by_alias))
            rank = sa.case((by_name, 0), else_=1)
        else:
            rank = sa.literal(0)
        ranked = sa.select(HOSPITALS, rank.label("rank")).where(*filters).subquery()
        stmt = sa.select(ranked).order_by(ranked.c.rank, ranked.c.hospital_id).limit(size + 1)
        if after is not None:
            stmt = stmt.where(sa.tuple_(ranked.c.rank, ranked.c.hospital_id) > tuple(after))
        async with self._replicas.read() as conn:
            rows = (await conn.execute(stmt)).all()
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(ranked))
            ).scalar_one()
        more = len(rows) > size
        rows = rows[:size]
        online = await self._online([r.hospital_id for r in rows]) if self._online else set()
        return HospitalPage(
            hospitals=[convert.hospital(r, online=r.hospital_id in online) for r in rows],
            next_cursor=_encode("h", [rows[-1].rank, rows[-1].hospital_id]) if more else "",
            total_size=int(total),
        )

    async def list_departments(
        self,
        hospital_id: str,
        *,
        parent_department_id: str = "",
        limit: int = 0,
        cursor: str = "",
    ) -> DepartmentPage:
        """The bookable departments of a hospital in its display order.

        Raises:
            UnknownHospital: no such hospital.
            QueryError: the cursor is invalid.
        """
        size = _limit(limit)
        after = _decode("dep", cursor, (int, str))
        t = DEPARTMENTS
        stmt = (
            sa.select(t)
            .where(t.c.hospital_id == hospital_id, t.c.bookable.is_(True))
            .order_by(t.c.display_order, t.c.department_id)
            .limit(size + 1)
        )
        if parent_department_id:
            stmt = stmt.where(t.c.parent_department_id == parent_department_id)
        if after is not None:
            stmt = stmt.where(sa.tuple_(t.c.display_order, t.c.department_id) > tuple(after))
        async with self._replicas.read() as conn:
            _, as_of = await self._header(conn, hospital_id, directory_pb2.ENTITY_KIND_DEPARTMENT)
            rows = (await conn.execute(stmt)).all()
        more = len(rows) > size
        rows = rows[:size]
        return DepartmentPage(
            departments=[convert.department(r) for r in rows],
            next_cursor=(
                _encode("dep", [rows[-1].display_order, rows[-1].department_id]) if more else ""
            ),
            as_of=as_of,
        )

    async def list_doctors(
        self,
        hospital_id: str,
        *,
        department_id: str = "",
        only_with_available_slots: bool = False,
        limit: int = 0,
        cursor: str = "",
    ) -> DoctorPage:
        """The bookable doctors of a hospital, of one department or with slots to book.

        Raises:
            UnknownHospital: no such hospital.
            QueryError: the cursor is invalid.
        """
        size = _limit(limit)
        after = _decode("doc", cursor, (str,))
        d = DOCTORS
        stmt = (
            sa.select(d)
            .where(d.c.hospital_id == hospital_id, d.c.bookable.is_(True))
            .order_by(d.c.doctor_id)
            .limit(size + 1)
        )
        if department_id:
            stmt = stmt.where(
                sa.exists().where(
                    DOCTOR_DEPARTMENTS.c.hospital_id == d.c.hospital_id,
                    DOCTOR_DEPARTMENTS.c.doctor_id == d.c.doctor_id,
                    DOCTOR_DEPARTMENTS.c.department_id == department_id,
                )
            )
        if after is not None:
            stmt = stmt.where(d.c.doctor_id > after[0])
        async with self._replicas.read() as conn:
            zone, as_of = await self._header(conn, hospital_id, directory_pb2.ENTITY_KIND_DOCTOR)
            if only_with_available_slots:
                today = dt.datetime.now(zone).date()
                s, sl = SCHEDULES, SLOTS
                stmt = stmt.where(
                    sa.exists()
                    .select_from(s.join(sl, _SAME_SCHEDULE))
                    .where(
                        s.c.hospital_id == d.c.hospital_id,
                        s.c.doctor_id == d.c.doctor_id,
                        s.c.date >= today,
                        s.c.date < today + dt.timedelta(days=AVAILABLE_DAYS),
                        s.c.status.in_(OPEN_SCHEDULE),
                        sl.c.status == directory_pb2.SLOT_STATUS_FREE,
                    )
                )
            rows = (await conn.execute(stmt)).all()
            more = len(rows) > size
            rows = rows[:size]
            departments: dict[str, list[str]] = {}
            if rows:
                links = await conn.execute(
                    sa.select(DOCTOR_DEPARTMENTS.c.doctor_id, DOCTOR_DEPARTMENTS.c.department_id)
                    .where(
                        DOCTOR_DEPARTMENTS.c.hospital_id == hospital_id,
                        DOCTOR_DEPARTMENTS.c.doctor_id.in_([r.doctor_id for r in rows]),
                    )
                    .order_by(DOCTOR_DEPARTMENTS.c.department_id)
                )
                for doctor_id, dep in links:
                    departments.setdefault(doctor_id, []).append(dep)
        return DoctorPage(
            doctors=[convert.doctor(r, departments.get(r.doctor_id, [])) for r in rows],
            next_cursor=_encode("doc", [rows[-1].doctor_id]) if more else "",
            as_of=as_of,
        )

    async def slot_fee(self, hospital_id: str, slot_id: str) -> int | None:
        """The fee a patient is shown for one slot, in fen; ``None`` if unknown.

        The slot's own fee, else its schedule's; ``None`` when the slot is not in the store
        or its fee is not in CNY.

        Orders at a hospital that cannot hold places charge this before booking the slot
        (the hospital refuses a payment that differs from its fee, and that is refunded).
        """
        stmt = (
            sa.select(
                SLOTS.c.fee_units,
                SLOTS.c.fee_nanos,
                SLOTS.c.fee_currency,
                SCHEDULES.c.fee_units.label("sched_units"),
                SCHEDULES.c.fee_nanos.label("sched_nanos"),
                SCHEDULES.c.fee_currency.label("sched_currency"),
            )
            .select_from(
                SLOTS.join(
                    SCHEDULES,
                    sa.and_(
                        SCHEDULES.c.hospital_id == SLOTS.c.hospital_id,
                        SCHEDULES.c.schedule_id == SLOTS.c.schedule_id,
                    ),
                )
            )
            .where(SLOTS.c.hospital_id == hospital_id, SLOTS.c.slot_id == slot_id)
        )
        async with self._replicas.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        if row.fee_units is not None:
            units, nanos, currency = row.fee_units, row.fee_nanos or 0, row.fee_currency
        else:
            units, nanos, currency = row.sched_units, row.sched_nanos, row.sched_currency
        if (currency or "CNY") != "CNY":
            return None
        return int(units) * 100 + round(int(nanos) / 10_000_000)

    async def list_slots(
        self,
        hospital_id: str,
        *,
        start_date: dt.date,
        end_date: dt.date | None = None,
        department_id: str = "",
        doctor_id: str = "",
        only_available: bool = False,
        limit: int = 0,
        cursor: str = "",
    ) -> SlotPage:
        """Slots of a department or doctor over a date range (hospital-local dates).

        Raises:
            UnknownHospital: no such hospital.
            QueryError: neither department nor doctor, a range that is reversed or longer
                than 31 days, or an invalid cursor.
        """
        size = _limit(limit)
        after = _decode("slot", cursor, (str, str, str, str))
        end = end_date or start_date
        if not department_id and not doctor_id:
            raise QueryError("department_id", "required unless doctor_id is set")
        if end < start_date:
            raise QueryError("end_date", "is before start_date")
        if (end - start_date).days > MAX_SLOT_DAYS:
            raise QueryError("end_date", f"more than {MAX_SLOT_DAYS} days after start_date")
        params: dict[str, Any] = {
            "h": hospital_id, "start": start_date, "end": end, "n": size + 1,
            "dep": department_id, "doc": doctor_id,
        }  # fmt: skip
        if after is not None:
            try:
                params.update(
                    k_date=dt.date.fromisoformat(after[0]),
                    k_start=dt.datetime.fromisoformat(after[1]),
                    k_doc=after[2],
                    k_slot=after[3],
                )
            except ValueError:
                raise QueryError("page_token", "is not a token this server issued") from None
        stmt = _slot_statement(
            bool(department_id), bool(doctor_id), only_available, after is not None
        )
        async with self._replicas.read() as conn:
            rows = (await conn.execute(stmt, params)).all()
            if rows:  # the usual case: one round trip
                if rows[0].h_zone is None:
                    raise UnknownHospital(hospital_id)
                zone, as_of = _zone(rows[0].h_zone), _as_of(rows[0].h_data_time)
            else:
                zone, as_of = await self._header(conn, hospital_id, directory_pb2.ENTITY_KIND_SLOT)
        more = len(rows) > size
        rows = rows[:size]
        next_cursor = ""
        if more:
            last = rows[-1]
            day = (
                last.s_date
                if isinstance(last.s_date, dt.date)
                else dt.date.fromisoformat(last.s_date)
            )
            start = convert.aware(last.start_at)
            assert start is not None  # validation requires a slot's start_time
            next_cursor = _encode(
                "slot", [day.isoformat(), start.isoformat(), last.s_doctor_id, last.slot_id]
            )
        return SlotPage(
            slots=[convert.slot(r, zone) for r in rows], next_cursor=next_cursor, as_of=as_of
        )
