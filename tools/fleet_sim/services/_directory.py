"""``DirectoryService`` of a simulated edge: List* from memory, the feed through the real protocol.

``GetChanges`` and ``GetDirectoryDigest`` run the edge's own feed code
(:mod:`frontend_server.directory`) over the hospital's :class:`MemoryHis`, then apply the
edge's feed fault, if any:

* ``renamed``: the entities come without their id field (a vendor renamed it and the edge
  no longer reads it), so their content digests no longer match their content;
* ``garbage``: every other change names one kind and carries another, a 7-byte digest and
  version 0;
* ``rewind``: versions go backwards (below what the cloud already holds).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from frontend_server.directory import FeedLimits, FeedRequestError, directory_digest, get_changes
from frontend_server.services import HOSPITAL_ERRORS
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from tools.fleet_sim.services._common import Ctx, page, reject

if TYPE_CHECKING:
    from tools.fleet_sim._edge import SimEdge

__all__ = ["FEED_FAULTS", "FleetDirectoryServicer", "register"]

FEED_FAULTS = ("renamed", "garbage", "rewind")
"""The feed faults a simulated edge can be told to show."""
_LIMITS = FeedLimits()
_ID_FIELDS = {
    "department": "department_id",
    "doctor": "doctor_id",
    "schedule": "schedule_id",
    "slot": "slot_id",
}
_REWIND = 10**12  # about eleven days of microseconds


def _corrupt(response: directory_pb2.GetChangesResponse, mode: str) -> None:
    for i, change in enumerate(response.changes):
        which = change.WhichOneof("change")
        if mode == "renamed" and which in _ID_FIELDS:
            getattr(change, which).ClearField(_ID_FIELDS[which])
        elif mode == "garbage" and i % 2 == 0:
            change.kind = (
                directory_pb2.ENTITY_KIND_DOCTOR
                if change.kind == directory_pb2.ENTITY_KIND_SLOT
                else directory_pb2.ENTITY_KIND_SLOT
            )
            change.content_digest = change.content_digest[:7]
            change.version = 0
        elif mode == "rewind":
            change.version = max(1, change.version - _REWIND)


@HOSPITAL_ERRORS.servicer
class FleetDirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer):
    """The directory of one simulated hospital.

    Args:
        edge: the simulated edge.
    """

    def __init__(self, edge: SimEdge) -> None:
        self._edge = edge

    async def ListDepartments(
        self, request: directory_pb2.ListDepartmentsRequest, context: Ctx
    ) -> directory_pb2.ListDepartmentsResponse:
        """Every department (all bookable, one campus)."""
        await self._edge.faults.delay()
        chunk, token = await page(
            context,
            self._edge.his.departments(),
            size=request.page_size,
            token=request.page_token,
            default=100,
            maximum=1000,
        )
        return directory_pb2.ListDepartmentsResponse(departments=chunk, next_page_token=token)

    async def ListDoctors(
        self, request: directory_pb2.ListDoctorsRequest, context: Ctx
    ) -> directory_pb2.ListDoctorsResponse:
        """Doctors, optionally of one department."""
        await self._edge.faults.delay()
        doctors = [
            d
            for d in self._edge.his.doctors()
            if not request.department_id or request.department_id in d.department_ids
        ]
        chunk, token = await page(
            context,
            doctors,
            size=request.page_size,
            token=request.page_token,
            default=100,
            maximum=1000,
        )
        return directory_pb2.ListDoctorsResponse(doctors=chunk, next_page_token=token)

    async def ListSchedules(
        self, request: directory_pb2.ListSchedulesRequest, context: Ctx
    ) -> directory_pb2.ListSchedulesResponse:
        """Sessions in a date range (default: today to the end of the simulated days)."""
        await self._edge.faults.delay()
        his = self._edge.his
        today = his.today()
        start = _date(request.start_date) or today
        end = _date(request.end_date) or his.first_day + dt.timedelta(days=his.shape.days)
        if end < start:
            reject("INVALID_ARGUMENT", "invalid request: end_date",
                         violations=[("end_date", "is before start_date")])  # fmt: skip
        schedules = [
            s
            for s in his.schedules(start, end)
            if (not request.department_id or s.department_id == request.department_id)
            and (not request.doctor_id or s.doctor_id == request.doctor_id)
            and (request.include_unbookable or s.status == directory_pb2.SCHEDULE_STATUS_OPEN)
        ]
        chunk, token = await page(
            context,
            schedules,
            size=request.page_size,
            token=request.page_token,
            default=100,
            maximum=1000,
        )
        return directory_pb2.ListSchedulesResponse(schedules=chunk, next_page_token=token)

    async def ListSlots(
        self, request: directory_pb2.ListSlotsRequest, context: Ctx
    ) -> directory_pb2.ListSlotsResponse:
        """The slots of one session."""
        await self._edge.faults.delay()
        if not request.schedule_id:
            reject("INVALID_ARGUMENT", "invalid request: schedule_id",
                         violations=[("schedule_id", "required")])  # fmt: skip
        slots = self._edge.his.slots_of(request.schedule_id)
        if slots is None:
            reject("NOT_FOUND", "the HIS has no such record",
                         reason="HIS_NOT_FOUND")  # fmt: skip
        if request.free_only:
            slots = [s for s in slots if s.status == directory_pb2.SLOT_STATUS_FREE]
        chunk, token = await page(
            context,
            slots,
            size=request.page_size,
            token=request.page_token,
            default=200,
            maximum=1000,
        )
        return directory_pb2.ListSlotsResponse(slots=chunk, next_page_token=token)

    async def GetChanges(
        self, request: directory_pb2.GetChangesRequest, context: Ctx
    ) -> directory_pb2.GetChangesResponse:
        """The feed, as a real edge serves it (plus the edge's feed fault)."""
        await self._edge.faults.delay()
        his = self._edge.his
        try:
            response = await get_changes(his, request, today=his.today(), limits=_LIMITS)
        except FeedRequestError as err:
            reject("INVALID_ARGUMENT", str(err), violations=err.violations)
        if self._edge.faults.feed:
            _corrupt(response, self._edge.faults.feed)
        return response

    async def GetDirectoryDigest(
        self, request: directory_pb2.GetDirectoryDigestRequest, context: Ctx
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """Digests of the current directory."""
        await self._edge.faults.delay()
        his = self._edge.his
        try:
            return await directory_digest(his, request, today=his.today())
        except FeedRequestError as err:
            reject("INVALID_ARGUMENT", str(err), violations=err.violations)


def _date(value: Any) -> dt.date | None:
    if not value.year:
        return None
    return dt.date(value.year, value.month, value.day)


def register(server: Any, edge: SimEdge) -> None:
    """Adds the directory service of ``edge`` to ``server``."""
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(FleetDirectoryServicer(edge), server)
