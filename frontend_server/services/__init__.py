"""The ``hplus.hospital.v1`` services of a front-end server, over its HIS.

One thin servicer per service: each validates, translates proto ↔ the adapters' neutral
records, and calls the HIS adapter, the idempotency ledger (writes and evidence reads) or
the pending-task queue. Errors become status codes in one place: every servicer is wrapped
with :data:`HOSPITAL_ERRORS`, whose table is :mod:`~frontend_server.services._errors`.
Build them over a :class:`Hospital`::

    hospital = Hospital(profile=profile, adapter=adapter, writes=WriteRunner(ledger), queue=q)
    register_hospital_services(server, hospital)
"""

from __future__ import annotations

from typing import Any

from frontend_server.services._appointment import AppointmentServicer
from frontend_server.services._billing import BillingServicer
from frontend_server.services._bridge import CAPABILITY_FLAGS, dialect_settings
from frontend_server.services._core import Hospital
from frontend_server.services._directory import DirectoryServicer
from frontend_server.services._errors import (
    ERROR_DOMAIN,
    HOSPITAL_ERRORS,
    REJECTIONS,
    InvalidRequest,
)
from frontend_server.services._limits import PacedAdapter, paced
from frontend_server.services._patient import PatientServicer
from frontend_server.services._refresh import DirectoryConfig, DirectoryRefresher
from frontend_server.services._report import ReportServicer
from frontend_server.services._rules import SlotIndex
from frontend_server.services._task import (
    CUSTOM_TASKS,
    TaskServicer,
    result_message,
    task_executor,
)
from frontend_server.services._writes import Probe, WriteRunner
from hplus.hospital.v1 import (
    appointment_pb2_grpc,
    billing_pb2_grpc,
    directory_pb2_grpc,
    patient_pb2_grpc,
    report_pb2_grpc,
    task_pb2_grpc,
)

__all__ = [
    "CAPABILITY_FLAGS",
    "CUSTOM_TASKS",
    "ERROR_DOMAIN",
    "HOSPITAL_ERRORS",
    "REJECTIONS",
    "AppointmentServicer",
    "BillingServicer",
    "DirectoryConfig",
    "DirectoryRefresher",
    "DirectoryServicer",
    "Hospital",
    "InvalidRequest",
    "PacedAdapter",
    "PatientServicer",
    "Probe",
    "ReportServicer",
    "SlotIndex",
    "TaskServicer",
    "WriteRunner",
    "dialect_settings",
    "paced",
    "register_hospital_services",
    "result_message",
    "task_executor",
]


def register_hospital_services(server: Any, hospital: Hospital) -> None:
    """Adds every hospital servicer to ``server``.

    Args:
        server: a ``grpc.aio.Server`` or the tunnel's registrar (anything the generated
            ``add_*Servicer_to_server`` functions accept).
        hospital: the servicers' collaborators.
    """
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(DirectoryServicer(hospital), server)
    appointment_pb2_grpc.add_AppointmentServiceServicer_to_server(
        AppointmentServicer(hospital), server
    )
    billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(hospital), server)
    report_pb2_grpc.add_ReportServiceServicer_to_server(ReportServicer(hospital), server)
    patient_pb2_grpc.add_PatientServiceServicer_to_server(PatientServicer(hospital), server)
    task_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(hospital), server)
