"""The edge's one error table, seen by a real client of a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from frontend_server.adapters import (
    HisCapabilityError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.ledger import (
    IdempotencyKeyInProgress,
    InvalidIdempotencyKey,
    OperationError,
    OperationUnknown,
)
from frontend_server.rules import Reason, RuleRefusal
from frontend_server.services import HOSPITAL_ERRORS, InvalidRequest
from frontend_server.services._errors import rejection, replayed, rule_refusal
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from mesh import errors

ERRORS: dict[str, Exception] = {
    "invalid": InvalidRequest([("schedule_id", "required"), ("page_size", "negative")]),
    "slot-full": HisRejected(RejectReason.SLOT_FULL, "42201", "号源已满 110101199003074518"),
    "refund": HisRejected(RejectReason.INSUFFICIENT_AMOUNT, "42206"),
    "his-field": HisRejected(
        RejectReason.INVALID_ARGUMENT,
        "40001",
        "身份证号码110101199003074518校验失败",
        field="id_card_number",
    ),
    "rule": RuleRefusal(
        Reason.BOOKING_RULE_VIOLATED, "real_name", "one booking per patient per doctor per day"
    ),
    "down": HisUnavailable("down", operation="list_departments", dialect="rest"),
    "timeout": HisTimeout("late", operation="list_departments", dialect="rest"),
    "capability": HisCapabilityError("charge_query_by_key", dialect="db"),
    "in-progress": IdempotencyKeyInProgress("k", "running", retry_after_seconds=2.5),
    "bad-key": InvalidIdempotencyKey("", "idempotency key is empty"),
    "unknown": OperationUnknown("k", "lost"),
    "replayed": replayed(
        OperationError(code="FAILED_PRECONDITION", reason="HOLD_EXPIRED", message="x")
    ),
    "bug": RuntimeError("patient 110101199003074518 broke it"),
}


@HOSPITAL_ERRORS.servicer
class Failing(directory_pb2_grpc.DirectoryServiceServicer):
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
        yield errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))
    await server.stop(None)


async def call(stub: directory_pb2_grpc.DirectoryServiceStub, case: str) -> errors.StatusError:
    with pytest.raises(errors.StatusError) as info:
        await stub.ListDepartments(directory_pb2.ListDepartmentsRequest(campus_id=case), timeout=5)
    assert "110101" not in info.value.message  # vendor texts and bugs never reach the caller
    return info.value


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
    assert err.code == code
    assert (err.reason, err.domain) == (reason, "hospital.hplus")


async def test_validation_says_what_is_wrong_with_every_field(
    stub: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    err = await call(stub, "invalid")
    assert type(err) is errors.InvalidArgument
    assert [v.field for v in err.field_violations] == ["schedule_id", "page_size"]
    assert err.message == "invalid request: schedule_id: required; page_size: negative"


async def test_a_his_refusal_names_the_refused_field(
    stub: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    err = await call(stub, "his-field")
    assert type(err) is errors.InvalidArgument
    assert err.message == "the HIS refused a parameter: id_card_number"
    assert err.field_violations == (
        errors.FieldViolation("id_card_number", "refused by the HIS (vendor code 40001)"),
    )
    assert (err.reason, err.metadata) == ("HIS_INVALID_ARGUMENT", {"vendor_code": "40001"})


async def test_a_rule_refusal_carries_the_rule_and_its_text(
    stub: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    err = await call(stub, "rule")
    assert type(err) is errors.FailedPrecondition
    assert err.message == (
        "a hospital rule refuses this booking: one booking per patient per doctor per day "
        "(rule real_name)"
    )
    assert err.reason == "BOOKING_RULE_VIOLATED"
    assert err.metadata == {
        "rule": "real_name",
        "rule_text": "one booking per patient per doctor per day",
    }


async def test_key_in_progress_says_when_to_retry(
    stub: directory_pb2_grpc.DirectoryServiceStub,
) -> None:
    err = await call(stub, "in-progress")
    assert (type(err), err.retry_delay) == (errors.Aborted, 2.5)


async def test_a_bad_key_names_the_field(stub: directory_pb2_grpc.DirectoryServiceStub) -> None:
    err = await call(stub, "bad-key")
    assert err.reason == "IDEMPOTENCY_KEY_INVALID"
    assert err.field_violations == (
        errors.FieldViolation("idempotency_key", "idempotency key is empty"),
    )


async def test_a_bug_is_internal_and_leaks_nothing(
    stub: directory_pb2_grpc.DirectoryServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    err = await call(stub, "bug")
    assert type(err) is errors.Internal
    correlation = err.metadata[errors.CORRELATION_KEY]
    assert err.message == f"internal error (correlation id {correlation})"
    assert f"DirectoryService.ListDepartments failed (correlation id {correlation})" in (
        caplog.text
    )


def test_refusals_are_recorded_with_what_a_replay_needs() -> None:
    """The ledger keeps the field and the rule text: a retry gets the same details."""
    his = rejection(
        HisRejected(RejectReason.INVALID_ARGUMENT, "40001", "x", field="id_card_number")
    )
    rule = rule_refusal(RuleRefusal(Reason.SLOT_FULL, "capacity", "no place is free"))
    for recorded in (his, rule):
        again = OperationError(**{**recorded.__dict__, "violations": list(recorded.violations)})
        assert again == recorded
        first, replay = replayed(recorded), replayed(again)
        assert first.to_status() == replay.to_status()
    assert replayed(rule).metadata == {"rule": "capacity", "rule_text": "no place is free"}
    assert replayed(his).field_violations[0].field == "id_card_number"
