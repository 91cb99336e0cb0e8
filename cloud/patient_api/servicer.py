"""``hplus.cloud.v1.PatientApiService``: authenticates, validates, reads or delegates.

Reads of reference data (SearchHospitals, ListDepartments, ListDoctors, ListSlots) need an
app key (no account) and are answered from the public read store (`ReadQueries`), never
from a hospital; ListSlots, the hot read, goes through a short `ReadCache`. Every list is
paged with AIP-158 tokens (`PageTokens`: signed, bound to the query, 24 h).

Orders (BookAppointment, CancelAppointment, PayOrder, GetOrder, ListOrders) and reports
(ListReports, GetReport) need a signed-in account; after authentication they are handed to
the node's `OrderApi` / `ReportApi`, or answered UNIMPLEMENTED when the node has none.

Errors leave through the cloud's one mapping (``CLOUD_ERRORS``): validation raises
INVALID_ARGUMENT with every field violation, an unknown hospital NOT_FOUND with
``ResourceInfo``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import grpc

from cloud.accounts import Authenticator, Caller
from cloud.errors import CLOUD_ERRORS
from cloud.patient_api._cache import ReadCache
from cloud.patient_api._parts import OrderApi, ReportApi
from cloud.patient_api._tokens import PageTokens, TokenError
from cloud.patient_api._validate import (
    Violations,
    check_id,
    check_page,
    check_query,
    check_slot_range,
    feature_names,
)
from cloud.readstore import ReadQueries
from hplus.cloud.v1 import patient_pb2, patient_pb2_grpc
from mesh import errors

__all__ = ["PatientApiServicer"]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_SERVICE = "hplus.cloud.v1.PatientApiService"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@CLOUD_ERRORS.servicer
class PatientApiServicer(patient_pb2_grpc.PatientApiServiceServicer):
    """The patient API: reads from the read store; orders and reports delegated.

    Args:
        auth: who is calling (app key; the account's token for orders and reports).
        queries: the read store's reads.
        tokens: page tokens.
        cache: the hot-read cache in front of ListSlots.
        orders: the orders part, or ``None`` (its RPCs answer UNIMPLEMENTED).
        reports: the reports part, or ``None`` (its RPCs answer UNIMPLEMENTED).
        today: the current date (UTC) for date bounds; tests inject one.
    """

    def __init__(
        self,
        *,
        auth: Authenticator,
        queries: ReadQueries,
        tokens: PageTokens,
        cache: ReadCache[patient_pb2.ListSlotsResponse] | None = None,
        orders: OrderApi | None = None,
        reports: ReportApi | None = None,
        today: Callable[[], dt.date] = _today,
    ) -> None:
        self._auth = auth
        self._queries = queries
        self._tokens = tokens
        # Not `cache or …`: an empty cache is falsy (it has a length).
        self.cache = cache if cache is not None else ReadCache(ttl=0)
        """The ListSlots cache (its ``hits`` and ``misses`` are counted)."""
        self.orders = orders
        self.reports = reports
        self._today = today

    def _cursor(self, method: str, request: Any, out: Violations) -> str:
        try:
            return self._tokens.open(method, request)
        except TokenError as err:
            out.append(("page_token", err.message))
            return ""

    # -- reads ---------------------------------------------------------------------

    async def SearchHospitals(
        self, request: patient_pb2.SearchHospitalsRequest, context: Context
    ) -> patient_pb2.SearchHospitalsResponse:
        """Hospitals by name, pinyin initials, region and features."""
        await self._auth.caller(context, account=False)
        bad: Violations = []
        check_query("query", request.query, bad)
        if request.region_code and not (
            request.region_code.isascii()
            and request.region_code.isdigit()
            and len(request.region_code) <= 6
        ):
            bad.append(("region_code", "must be 1-6 digits (a GB/T 2260 code prefix)"))
        features = feature_names(list(request.features), bad)
        size = check_page(request.page_size, bad)
        cursor = self._cursor("SearchHospitals", request, bad)
        if bad:
            raise errors.InvalidArgument(field_violations=bad)
        page = await self._queries.search_hospitals(
            query=request.query,
            region_code=request.region_code,
            features=features,
            limit=size,
            cursor=cursor,
        )
        return patient_pb2.SearchHospitalsResponse(
            hospitals=page.hospitals,
            next_page_token=self._tokens.issue("SearchHospitals", request, page.next_cursor),
            total_size=page.total_size,
        )

    async def ListDepartments(
        self, request: patient_pb2.ListDepartmentsRequest, context: Context
    ) -> patient_pb2.ListDepartmentsResponse:
        """A hospital's bookable departments."""
        await self._auth.caller(context, account=False)
        bad: Violations = []
        check_id("hospital_id", request.hospital_id, bad, required=True)
        check_id("parent_department_id", request.parent_department_id, bad, required=False)
        size = check_page(request.page_size, bad)
        cursor = self._cursor("ListDepartments", request, bad)
        if bad:
            raise errors.InvalidArgument(field_violations=bad)
        page = await self._queries.list_departments(
            request.hospital_id,
            parent_department_id=request.parent_department_id,
            limit=size,
            cursor=cursor,
        )
        out = patient_pb2.ListDepartmentsResponse(
            departments=page.departments,
            next_page_token=self._tokens.issue("ListDepartments", request, page.next_cursor),
        )
        if page.as_of is not None:
            out.as_of.CopyFrom(page.as_of)
        return out

    async def ListDoctors(
        self, request: patient_pb2.ListDoctorsRequest, context: Context
    ) -> patient_pb2.ListDoctorsResponse:
        """A hospital's doctors, of one department or with free slots."""
        await self._auth.caller(context, account=False)
        bad: Violations = []
        check_id("hospital_id", request.hospital_id, bad, required=True)
        check_id("department_id", request.department_id, bad, required=False)
        size = check_page(request.page_size, bad)
        cursor = self._cursor("ListDoctors", request, bad)
        if bad:
            raise errors.InvalidArgument(field_violations=bad)
        page = await self._queries.list_doctors(
            request.hospital_id,
            department_id=request.department_id,
            only_with_available_slots=request.only_with_available_slots,
            limit=size,
            cursor=cursor,
        )
        out = patient_pb2.ListDoctorsResponse(
            doctors=page.doctors,
            next_page_token=self._tokens.issue("ListDoctors", request, page.next_cursor),
        )
        if page.as_of is not None:
            out.as_of.CopyFrom(page.as_of)
        return out

    async def ListSlots(
        self, request: patient_pb2.ListSlotsRequest, context: Context
    ) -> patient_pb2.ListSlotsResponse:
        """Slots of a department or doctor over a date range (cached for a few seconds)."""
        await self._auth.caller(context, account=False)
        bad: Violations = []
        check_id("hospital_id", request.hospital_id, bad, required=True)
        check_id("department_id", request.department_id, bad, required=False)
        check_id("doctor_id", request.doctor_id, bad, required=False)
        if not request.department_id and not request.doctor_id:
            bad.append(("department_id", "required unless doctor_id is set"))
        start, end = check_slot_range(request, self._today(), bad)
        size = check_page(request.page_size, bad)
        cursor = self._cursor("ListSlots", request, bad)
        if bad:
            raise errors.InvalidArgument(field_violations=bad)
        assert start is not None  # no violation: a valid start_date

        async def load() -> patient_pb2.ListSlotsResponse:
            page = await self._queries.list_slots(
                request.hospital_id,
                start_date=start,
                end_date=end,
                department_id=request.department_id,
                doctor_id=request.doctor_id,
                only_available=request.only_available,
                limit=size,
                cursor=cursor,
            )
            out = patient_pb2.ListSlotsResponse(
                slots=page.slots,
                next_page_token=self._tokens.issue("ListSlots", request, page.next_cursor),
            )
            if page.as_of is not None:
                out.as_of.CopyFrom(page.as_of)
            return out

        # Keyed by the whole request but the hospital (which keys the cache's partition):
        # the page token and size are part of what the answer is.
        key = (
            request.department_id,
            request.doctor_id,
            start,
            end,
            request.only_available,
            size,
            request.page_token,
        )
        return await self.cache.read(request.hospital_id, key, load)

    # -- orders and reports: a signed-in account, then the part that owns them ------

    async def _account(self, context: Context) -> Caller:
        return await self._auth.caller(context, account=True)

    def _orders(self, method: str) -> OrderApi:
        if self.orders is None:
            raise errors.Unimplemented(
                f"{_SERVICE}/{method}: orders are not configured on this node "
                "(no order part is attached to the patient API)",
                reason="ORDERS_NOT_CONFIGURED",
            )
        return self.orders

    def _reports(self, method: str) -> ReportApi:
        if self.reports is None:
            raise errors.Unimplemented(
                f"{_SERVICE}/{method}: reports are not configured on this node "
                "(no report part is attached to the patient API)",
                reason="REPORTS_NOT_CONFIGURED",
            )
        return self.reports

    async def BookAppointment(
        self, request: patient_pb2.BookAppointmentRequest, context: Context
    ) -> patient_pb2.BookAppointmentResponse:
        """Delegated to the orders part."""
        caller = await self._account(context)
        return await self._orders("BookAppointment").book_appointment(request, caller)

    async def CancelAppointment(
        self, request: patient_pb2.CancelAppointmentRequest, context: Context
    ) -> patient_pb2.CancelAppointmentResponse:
        """Delegated to the orders part."""
        caller = await self._account(context)
        return await self._orders("CancelAppointment").cancel_appointment(request, caller)

    async def PayOrder(
        self, request: patient_pb2.PayOrderRequest, context: Context
    ) -> patient_pb2.PayOrderResponse:
        """Delegated to the orders part."""
        caller = await self._account(context)
        return await self._orders("PayOrder").pay_order(request, caller)

    async def GetOrder(
        self, request: patient_pb2.GetOrderRequest, context: Context
    ) -> patient_pb2.GetOrderResponse:
        """Delegated to the orders part."""
        caller = await self._account(context)
        return await self._orders("GetOrder").get_order(request, caller)

    async def ListOrders(
        self, request: patient_pb2.ListOrdersRequest, context: Context
    ) -> patient_pb2.ListOrdersResponse:
        """Delegated to the orders part."""
        caller = await self._account(context)
        return await self._orders("ListOrders").list_orders(request, caller)

    async def ListReports(
        self, request: patient_pb2.ListReportsRequest, context: Context
    ) -> patient_pb2.ListReportsResponse:
        """Delegated to the reports part."""
        caller = await self._account(context)
        return await self._reports("ListReports").list_reports(request, caller)

    async def GetReport(
        self, request: patient_pb2.GetReportRequest, context: Context
    ) -> patient_pb2.GetReportResponse:
        """Delegated to the reports part."""
        caller = await self._account(context)
        return await self._reports("GetReport").get_report(request, caller)
