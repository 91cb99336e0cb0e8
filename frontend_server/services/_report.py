"""``hplus.hospital.v1.ReportService``: report headers and content, live from the HIS."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import grpc

from frontend_server.adapters import HisRejected, RejectReason
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, page, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest
from hplus.hospital.v1 import report_pb2, report_pb2_grpc
from mesh import errors

__all__ = ["ReportServicer"]

Ctx = grpc.aio.ServicerContext


@HOSPITAL_ERRORS.servicer
class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    """Lists and reads reports; an archived report answers with its header only.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital
        self._zone = zoneinfo.ZoneInfo(hospital.profile.business_hours.timezone)

    async def ListReports(
        self,
        request: report_pb2.ListReportsRequest,
        context: Ctx[report_pb2.ListReportsRequest, report_pb2.ListReportsResponse],
    ) -> report_pb2.ListReportsResponse:
        """A patient's report headers, newest first."""
        require_mode(self._h.profile, "list_reports")
        patient_id = await self._h.patient_id(request.patient)
        today = dt.datetime.now(self._zone).date()
        start = convert.from_date(request.start_date) or today - dt.timedelta(days=90)
        end = convert.from_date(request.end_date) or today
        types = set(request.types)
        summaries = []
        for found in await self._h.adapter.list_reports(patient_id):
            when = found.issued_at or found.expected_at
            day = when.astimezone(self._zone).date() if when is not None else today
            summary = convert.report_summary(found)
            if start <= day <= end and (not types or summary.type in types):
                summaries.append((when or dt.datetime.max.replace(tzinfo=dt.UTC), summary))
        summaries.sort(key=lambda pair: pair[0], reverse=True)
        chunk, token = page(
            [s for _, s in summaries],
            size=request.page_size,
            token=request.page_token,
            default=50,
            maximum=200,
        )
        return report_pb2.ListReportsResponse(reports=chunk, next_page_token=token)

    async def GetReport(
        self,
        request: report_pb2.GetReportRequest,
        context: Ctx[report_pb2.GetReportRequest, report_pb2.GetReportResponse],
    ) -> report_pb2.GetReportResponse:
        """One report with its content (header only when archived or not ready)."""
        require_mode(self._h.profile, "get_report")
        if not request.report_id:
            raise InvalidRequest([("report_id", "required")])
        patient_id = await self._h.patient_id(request.patient)
        summary = await self._summary(patient_id, request.report_id)
        if summary.availability != report_pb2.REPORT_AVAILABILITY_AVAILABLE:
            return report_pb2.GetReportResponse(report=report_pb2.Report(summary=summary))
        try:
            found = await self._h.adapter.get_report(request.report_id, patient_id=patient_id)
        except HisRejected as err:
            if err.reason is not RejectReason.REPORT_ARCHIVED:
                raise
            # Archived between the listing and the read.
            summary.availability = report_pb2.REPORT_AVAILABILITY_ARCHIVED
            return report_pb2.GetReportResponse(report=report_pb2.Report(summary=summary))
        return report_pb2.GetReportResponse(report=convert.report(found, summary))

    async def _summary(self, patient_id: str, report_id: str) -> report_pb2.ReportSummary:
        for found in await self._h.adapter.list_reports(patient_id):
            if found.report_id == report_id:
                return convert.report_summary(found)
        raise errors.NotFound("the patient has no such report")
