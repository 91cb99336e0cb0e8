"""The one error table of the hospital services, seen by a real client of a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from frontend_server.adapters import (
    HisCapabilityError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.ledger import IdempotencyKeyInProgress, OperationError, OperationUnknown
from frontend_server.services._errors import Failed, InvalidRequest, rpc
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc

ERRORS: dict[str, Exception] = {
    "invalid": InvalidRequest([("schedule_id", "required"), ("page_size", "negative")]),
    "slot-full": HisRejected(RejectReason.SLOT_FULL, "42201", "号源已满 110101199003074518"),
    "refund": HisRejected(RejectReason.INSUFFICIENT_AMOUNT, "42206"),
    "down": HisUnavailable("down", operation="list_departments", dialect="rest"),
    "timeout": HisTimeout("late", operation="list_departments", dialect="rest"),
    "capability": HisCapabilityError("charge_query_by_key", dialect="db"),
    "in-progress": IdempotencyKeyInProgress("k", "running", retry_after_seconds=2.5),
    "unknown": OperationUnknown("k", "lost"),
    "replayed": Failed(
        OperationError(code="FAILED_PRECONDITION", reason="HOLD_EXPIRED", message="x")
    ),
    "bug": RuntimeError("patient 110101199003074518 broke it"),
}


class Failing(directory_pb2_grpc.DirectoryServiceServicer):
    @rpc
    async def ListDepartments(
        self,
        request: directory_pb2.ListDepartmentsRequest,
        context: grpc.aio.ServicerContext[
            directory_pb2.ListDepartmentsRequest, directory_pb2.ListDepartmentsResponse
        ],
    ) -> directory_pb2.ListDepartmentsResponse:
        raise ERRORS[request.campus_id]


@pytest.fixture
async def stub() -> AsyncIterator[directory_pb2_grpc.DirectoryServiceStub]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield directory_pb2_grpc.DirectoryServiceStub(channel)
    await server.stop(None)


async def call(stub: directory_pb2_grpc.DirectoryServiceStub, case: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListDepartments(directory_pb2.ListDepartmentsRequest(campus_id=case), timeout=5)
    return info.value


def details(err: grpc.aio.AioRpcError) -> dict[str, object]:
    status = rpc_status.from_call(err)  # raises if code or message disagree with the call's
    out: dict[str, object] = {}
    if status is None:
        return out
    for any_ in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                out[cls.__name__] = msg
    return out


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("slot-full", grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOT_FULL"),
        ("refund", grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_CHARGE"),
        ("down", grpc.StatusCode.UNAVAILABLE, "HIS_UNAVAILABLE"),
        ("timeout", grpc.StatusCode.UNAVAILABLE, "HIS_TIMEOUT"),
        ("capability", grpc.StatusCode.UNIMPLEMENTED, "OPERATION_UNSUPPORTED"),
        ("unknown", grpc.StatusCode.UNAVAILABLE, "OPERATION_OUTCOME_UNKNOWN"),
        ("replayed", grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED"),
    ],
)
async def test_domain_errors_map_to_codes_with_error_info(
    stub: directory_pb2_grpc.DirectoryServiceStub, case: str, code: grpc.StatusCode, reason: str
) -> None:
    err = await call(stub, case)
    assert err.code() == code
    info = details(err)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "hospital.hplus")
    assert "110101" not in (err.details() or "")  # vendor texts never reach the message


async def test_validation_lists_every_field(stub: directory_pb2_grpc.DirectoryServiceStub) -> None:
    err = await call(stub, "invalid")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(err)["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["schedule_id", "page_size"]


async def test_key_in_progress_says_when_to_retry(
    stub: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    err = await call(stub, "in-progress")
    assert err.code() == grpc.StatusCode.ABORTED
    retry = details(err)["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_a_bug_is_internal_and_leaks_nothing(
    stub: directory_pb2_grpc.DirectoryServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    err = await call(stub, "bug")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "ListDepartments failed unexpectedly" in caplog.text
