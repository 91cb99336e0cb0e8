"""``hplus.hospital.v1.DirectoryService``: departments, doctors, sessions, slots, changes."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable

import grpc
from google.protobuf import timestamp_pb2

from frontend_server.adapters import (
    Department,
    Doctor,
    HisCapabilityError,
    Schedule,
    Slot,
)
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, page, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from mesh.digest import bucket_digests, bucket_of, content_digest

__all__ = ["DirectoryServicer"]

Ctx = grpc.aio.ServicerContext
_BOOKABLE = (directory_pb2.SCHEDULE_STATUS_OPEN,)


@HOSPITAL_ERRORS.servicer
class DirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer):
    """Reads the hospital's reference data live from the HIS.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital
        self._zone = zoneinfo.ZoneInfo(hospital.profile.business_hours.timezone)

    async def ListDepartments(
        self,
        request: directory_pb2.ListDepartmentsRequest,
        context: Ctx[directory_pb2.ListDepartmentsRequest, directory_pb2.ListDepartmentsResponse],
    ) -> directory_pb2.ListDepartmentsResponse:
        """Departments in display order."""
        require_mode(self._h.profile, "list_departments")
        departments = sorted(
            (convert.department(x) for x in await self._h.adapter.list_departments()),
            key=lambda x: (x.display_order, x.department_id),
        )
        if not request.include_unbookable:
            departments = [x for x in departments if x.bookable]
        if request.campus_id:
            departments = [x for x in departments if x.campus_id == request.campus_id]
        chunk, token = page(
            departments, size=request.page_size, token=request.page_token, default=100, maximum=1000
        )
        return directory_pb2.ListDepartmentsResponse(departments=chunk, next_page_token=token)

    async def ListDoctors(
        self,
        request: directory_pb2.ListDoctorsRequest,
        context: Ctx[directory_pb2.ListDoctorsRequest, directory_pb2.ListDoctorsResponse],
    ) -> directory_pb2.ListDoctorsResponse:
        """Doctors, optionally of one department."""
        require_mode(self._h.profile, "list_doctors")
        doctors = [
            convert.doctor(x)
            for x in await self._h.adapter.list_doctors(department_id=request.department_id)
        ]
        if not request.include_unbookable:
            doctors = [x for x in doctors if x.bookable]
        chunk, token = page(
            doctors, size=request.page_size, token=request.page_token, default=100, maximum=1000
        )
        return directory_pb2.ListDoctorsResponse(doctors=chunk, next_page_token=token)

    async def ListSchedules(
        self,
        request: directory_pb2.ListSchedulesRequest,
        context: Ctx[directory_pb2.ListSchedulesRequest, directory_pb2.ListSchedulesResponse],
    ) -> directory_pb2.ListSchedulesResponse:
        """Sessions in a date range (default: today to the end of the booking window)."""
        require_mode(self._h.profile, "list_schedules")
        today = dt.datetime.now(self._zone).date()
        start = convert.from_date(request.start_date) or today
        end = convert.from_date(request.end_date) or today + dt.timedelta(
            days=self._h.profile.appointment.booking_window_days
        )
        if end < start:
            raise InvalidRequest([("end_date", "is before start_date")])
        schedules = [
            convert.schedule(x)
            for x in await self._h.adapter.list_schedules(
                department_id=request.department_id,
                doctor_id=request.doctor_id,
                start=start,
                end=end,
            )
        ]
        if not request.include_unbookable:
            schedules = [x for x in schedules if x.status in _BOOKABLE]
        schedules.sort(
            key=lambda x: ((x.date.year, x.date.month, x.date.day), x.period, x.department_id)
        )
        chunk, token = page(
            schedules, size=request.page_size, token=request.page_token, default=100, maximum=1000
        )
        return directory_pb2.ListSchedulesResponse(schedules=chunk, next_page_token=token)

    async def ListSlots(
        self,
        request: directory_pb2.ListSlotsRequest,
        context: Ctx[directory_pb2.ListSlotsRequest, directory_pb2.ListSlotsResponse],
    ) -> directory_pb2.ListSlotsResponse:
        """The slots of one session, with live availability."""
        require_mode(self._h.profile, "list_slots")
        if not request.schedule_id:
            raise InvalidRequest([("schedule_id", "required")])
        listed = await self._h.adapter.list_slots(request.schedule_id)
        self._h.slots.note(listed)  # where the appointment rules find a slot's session
        slots = [convert.slot(x) for x in listed]
        if request.free_only:
            slots = [x for x in slots if x.status == directory_pb2.SLOT_STATUS_FREE]
        chunk, token = page(
            slots, size=request.page_size, token=request.page_token, default=200, maximum=1000
        )
        return directory_pb2.ListSlotsResponse(slots=chunk, next_page_token=token)

    async def GetChanges(
        self,
        request: directory_pb2.GetChangesRequest,
        context: Ctx[directory_pb2.GetChangesRequest, directory_pb2.GetChangesResponse],
    ) -> directory_pb2.GetChangesResponse:
        """Changes since a watermark, or a full snapshot (see the contract).

        Pages are cut from one read of the HIS per page request; the watermark names the
        HIS's own change position, so re-reading a page is at-least-once delivery.
        """
        require_mode(self._h.profile, "get_changes")
        wanted = _bucket_filter(request.buckets) if request.HasField("buckets") else None
        kinds = set(request.kinds) or {
            directory_pb2.ENTITY_KIND_DEPARTMENT,
            directory_pb2.ENTITY_KIND_DOCTOR,
            directory_pb2.ENTITY_KIND_SCHEDULE,
            directory_pb2.ENTITY_KIND_SLOT,
        }
        adapter = self._h.adapter
        snapshot = not request.since
        changes: list[directory_pb2.EntityChange] = []
        watermark = ""
        if not snapshot and adapter.capabilities.incremental_changes:
            try:
                delta = await adapter.get_changes(request.since)
            except HisCapabilityError:
                snapshot = True
            else:
                watermark = delta.watermark
                changes = _entity_changes(
                    delta.departments, delta.doctors, delta.schedules, delta.slots
                )
                for gone in delta.deleted:
                    kind = (
                        directory_pb2.ENTITY_KIND_SCHEDULE
                        if gone.kind == "SCHEDULE"
                        else directory_pb2.ENTITY_KIND_SLOT
                    )
                    changes.append(
                        directory_pb2.EntityChange(
                            kind=kind, entity_id=gone.entity_id, deleted=True
                        )
                    )
        else:
            snapshot = True
        if snapshot:
            if adapter.capabilities.incremental_changes:
                full = await adapter.get_changes(None)
                watermark = full.watermark
                changes = _entity_changes(
                    full.departments, full.doctors, full.schedules, full.slots
                )
            else:
                today = dt.datetime.now(self._zone).date()
                schedules = await adapter.list_schedules(start=today)
                slots: list[Slot] = []
                if directory_pb2.ENTITY_KIND_SLOT in kinds:
                    for s in schedules:
                        slots.extend(await adapter.list_slots(s.schedule_id))
                changes = _entity_changes(
                    await adapter.list_departments(),
                    await adapter.list_doctors(),
                    schedules,
                    slots,
                )
                watermark = f"full:{today.isoformat()}"
        changes = [c for c in changes if c.kind in kinds]
        if wanted is not None:
            count = request.buckets.bucket_count
            changes = [c for c in changes if bucket_of(c.entity_id, count) in wanted]
        chunk, token = page(
            changes, size=request.page_size, token=request.page_token, default=500, maximum=5000
        )
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return directory_pb2.GetChangesResponse(
            changes=chunk,
            next_page_token=token,
            watermark="" if token else watermark,
            snapshot=snapshot,
            data_time=now,
        )

    async def GetDirectoryDigest(
        self,
        request: directory_pb2.GetDirectoryDigestRequest,
        context: Ctx[
            directory_pb2.GetDirectoryDigestRequest, directory_pb2.GetDirectoryDigestResponse
        ],
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """Per-kind, per-bucket digests of the current directory (see the contract)."""
        require_mode(self._h.profile, "get_changes")
        count = min(request.bucket_count or _DEFAULT_BUCKETS, _MAX_BUCKETS)
        kinds = list(dict.fromkeys(request.kinds)) or list(_ALL_KINDS)
        adapter = self._h.adapter
        today = dt.datetime.now(self._zone).date()
        schedules = await adapter.list_schedules(start=today)
        slots: list[Slot] = []
        if directory_pb2.ENTITY_KIND_SLOT in kinds:
            for s in schedules:
                slots.extend(await adapter.list_slots(s.schedule_id))
        changes = _entity_changes(
            await adapter.list_departments(), await adapter.list_doctors(), schedules, slots
        )
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        response = directory_pb2.GetDirectoryDigestResponse(
            bucket_count=count, scope_start_date=convert.date(today), data_time=now
        )
        for kind in kinds:
            of_kind = [(c.entity_id, c.content_digest) for c in changes if c.kind == kind]
            response.kinds.append(
                directory_pb2.KindDigest(
                    kind=kind, count=len(of_kind), bucket_digests=bucket_digests(of_kind, count)
                )
            )
        return response


_DEFAULT_BUCKETS = 64
_MAX_BUCKETS = 4096
_ALL_KINDS = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)


def _bucket_filter(buckets: directory_pb2.BucketFilter) -> frozenset[int]:
    count = buckets.bucket_count
    if not 1 <= count <= _MAX_BUCKETS:
        raise InvalidRequest([("buckets.bucket_count", f"must be in [1, {_MAX_BUCKETS}]")])
    if not buckets.buckets:
        raise InvalidRequest([("buckets.buckets", "at least one bucket is required")])
    bad = [b for b in buckets.buckets if b >= count]
    if bad:
        raise InvalidRequest([("buckets.buckets", f"bucket {bad[0]} is not below bucket_count")])
    return frozenset(buckets.buckets)


def _version(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000 if stamp.seconds else 1


def _entity_changes(
    departments: Iterable[Department],
    doctors: Iterable[Doctor],
    schedules: Iterable[Schedule],
    slots: Iterable[Slot],
) -> list[directory_pb2.EntityChange]:
    out: list[directory_pb2.EntityChange] = []
    for dep in map(convert.department, departments):
        dep.version = _version(dep.update_time)
        out.append(
            directory_pb2.EntityChange(
                kind=directory_pb2.ENTITY_KIND_DEPARTMENT,
                entity_id=dep.department_id,
                version=dep.version,
                content_digest=content_digest(dep),
                department=dep,
            )
        )
    for doc in map(convert.doctor, doctors):
        doc.version = _version(doc.update_time)
        out.append(
            directory_pb2.EntityChange(
                kind=directory_pb2.ENTITY_KIND_DOCTOR,
                entity_id=doc.doctor_id,
                version=doc.version,
                content_digest=content_digest(doc),
                doctor=doc,
            )
        )
    for sch in map(convert.schedule, schedules):
        sch.version = _version(sch.update_time)
        out.append(
            directory_pb2.EntityChange(
                kind=directory_pb2.ENTITY_KIND_SCHEDULE,
                entity_id=sch.schedule_id,
                version=sch.version,
                content_digest=content_digest(sch),
                schedule=sch,
            )
        )
    for slot in map(convert.slot, slots):
        slot.version = _version(slot.update_time)
        out.append(
            directory_pb2.EntityChange(
                kind=directory_pb2.ENTITY_KIND_SLOT,
                entity_id=slot.slot_id,
                version=slot.version,
                content_digest=content_digest(slot),
                slot=slot,
            )
        )
    return out
