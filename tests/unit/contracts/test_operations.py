"""Every hospital RPC is served, and every profile operation a servicer checks exists.

Adding an RPC used to compile and lint but fail at run time with INTERNAL (a ``KeyError``
in the edge's log) when the servicer checked a profile operation that ``OPERATIONS`` did
not list; this test fails first (docs/architecture.md, "Add an RPC to a hospital service").
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from frontend_server import services
from frontend_server.profile import OPERATIONS
from hplus.hospital.v1 import (
    appointment_pb2,
    billing_pb2,
    directory_pb2,
    patient_pb2,
    report_pb2,
    task_pb2,
)

SERVED = {
    "AppointmentService": (appointment_pb2, services.AppointmentServicer),
    "BillingService": (billing_pb2, services.BillingServicer),
    "DirectoryService": (directory_pb2, services.DirectoryServicer),
    "PatientService": (patient_pb2, services.PatientServicer),
    "ReportService": (report_pb2, services.ReportServicer),
    "TaskService": (task_pb2, services.TaskServicer),
}


@pytest.mark.parametrize("service", sorted(SERVED))
def test_every_rpc_of_the_service_is_implemented(service: str) -> None:
    module, servicer = SERVED[service]
    base = servicer.__mro__[1]
    for method in module.DESCRIPTOR.services_by_name[service].methods:
        impl = getattr(servicer, method.name, None)
        assert impl is not None, f"{service}.{method.name} has no servicer method"
        assert impl is not getattr(base, method.name), (
            f"{service}.{method.name} is not implemented by {servicer.__name__} "
            "(the generated base answers UNIMPLEMENTED)"
        )


def _checked_operations() -> list[tuple[str, str]]:
    found = []
    for path in sorted(Path(inspect.getfile(services)).parent.glob("_*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(call, ast.Call)
                and getattr(call.func, "id", "") == "require_mode"
                and len(call.args) > 1
                and isinstance(call.args[1], ast.Constant)
            ):
                found.append((f"{path.name}:{call.lineno}", call.args[1].value))
    return found


def test_every_operation_a_servicer_checks_is_a_profile_operation() -> None:
    checked = _checked_operations()
    assert len(checked) >= 20  # the walk finds the servicers' checks at all
    unknown = [f"{where}: {op!r}" for where, op in checked if op not in OPERATIONS]
    assert not unknown, (
        "operations missing from frontend_server.profile.OPERATIONS (add them there so "
        f"every profile gets a mode): {unknown}"
    )
