"""``hplus.hospital.v1.DirectoryService``: departments, doctors, sessions, slots, changes."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import grpc

from frontend_server.directory import FeedRequestError, directory_digest, get_changes
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, page, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest, Unsupported
from frontend_server.services._refresh import DirectoryRefresher
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc

__all__ = ["DirectoryServicer"]

Ctx = grpc.aio.ServicerContext
_BOOKABLE = (directory_pb2.SCHEDULE_STATUS_OPEN,)


@HOSPITAL_ERRORS.servicer
class DirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer):
    """The hospital's reference data: List* live from the HIS, the feed from the mirror.

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

    def _directory(self) -> DirectoryRefresher:
        if self._h.directory is None:
            raise Unsupported("this edge keeps no directory mirror")
        return self._h.directory

    def _today(self) -> dt.date:
        return self._h.clock().astimezone(self._zone).date()

    async def GetChanges(
        self,
        request: directory_pb2.GetChangesRequest,
        context: Ctx[directory_pb2.GetChangesRequest, directory_pb2.GetChangesResponse],
    ) -> directory_pb2.GetChangesResponse:
        """Changes since a watermark, or a full snapshot (see the contract).

        Served from the directory mirror, never from the HIS: a pass that starts on a stale
        mirror asks for a refresh first and waits a bounded time for it.
        """
        require_mode(self._h.profile, "get_changes")
        directory = self._directory()
        try:
            return await get_changes(
                directory.mirror,
                request,
                today=self._today(),
                limits=directory.config.limits,
                prepare=directory.ensure_fresh,
            )
        except FeedRequestError as err:
            raise InvalidRequest(err.violations) from None

    async def GetDirectoryDigest(
        self,
        request: directory_pb2.GetDirectoryDigestRequest,
        context: Ctx[
            directory_pb2.GetDirectoryDigestRequest, directory_pb2.GetDirectoryDigestResponse
        ],
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """Per-kind, per-bucket digests of the mirror's directory (see the contract)."""
        require_mode(self._h.profile, "get_changes")
        directory = self._directory()
        try:
            return await directory_digest(
                directory.mirror, request, today=self._today(), prepare=directory.ensure_fresh
            )
        except FeedRequestError as err:
            raise InvalidRequest(err.violations) from None
