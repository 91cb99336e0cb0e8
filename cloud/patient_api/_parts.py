"""The parts of the patient API that live elsewhere: orders (book, cancel, pay) and reports.

`PatientApiServicer` authenticates these calls (a signed-in account) and hands the request
and the `Caller` to the part the node was built with; a node built without one answers
UNIMPLEMENTED naming the part. Each method returns the RPC's response message and raises
tree errors (``mesh.errors``) or errors the cloud's mapping knows.
"""

from __future__ import annotations

from typing import Protocol

from cloud.accounts import Caller
from hplus.cloud.v1 import patient_pb2

__all__ = ["OrderApi", "ReportApi"]


class OrderApi(Protocol):
    """Orders of the calling account: booking, cancelling, paying, reading them."""

    async def book_appointment(
        self, request: patient_pb2.BookAppointmentRequest, caller: Caller
    ) -> patient_pb2.BookAppointmentResponse:
        """``BookAppointment`` for the signed-in ``caller``."""
        ...

    async def cancel_appointment(
        self, request: patient_pb2.CancelAppointmentRequest, caller: Caller
    ) -> patient_pb2.CancelAppointmentResponse:
        """``CancelAppointment`` for the signed-in ``caller``."""
        ...

    async def pay_order(
        self, request: patient_pb2.PayOrderRequest, caller: Caller
    ) -> patient_pb2.PayOrderResponse:
        """``PayOrder`` for the signed-in ``caller``."""
        ...

    async def get_order(
        self, request: patient_pb2.GetOrderRequest, caller: Caller
    ) -> patient_pb2.GetOrderResponse:
        """``GetOrder`` for the signed-in ``caller``."""
        ...

    async def list_orders(
        self, request: patient_pb2.ListOrdersRequest, caller: Caller
    ) -> patient_pb2.ListOrdersResponse:
        """``ListOrders`` for the signed-in ``caller``."""
        ...


class ReportApi(Protocol):
    """Reports of the patients the calling account may see."""

    async def list_reports(
        self, request: patient_pb2.ListReportsRequest, caller: Caller
    ) -> patient_pb2.ListReportsResponse:
        """``ListReports`` for the signed-in ``caller``."""
        ...

    async def get_report(
        self, request: patient_pb2.GetReportRequest, caller: Caller
    ) -> patient_pb2.GetReportResponse:
        """``GetReport`` for the signed-in ``caller``."""
        ...
