"""The error tree: registry by code, details, and the google.rpc.Status round trip."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, wrappers_pb2
from google.rpc import error_details_pb2

import mesh.errors as errors
from mesh.errors import (
    ClientError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Resource,
    ServerError,
    StatusError,
    Unavailable,
    error_for,
)

EXPORTS = [
    "CORRELATION_KEY",
    "INTERNAL_REASON",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ClientError",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorMapping",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "Resource",
    "ResourceExhausted",
    "ServerError",
    "StatusError",
    "Translate",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for",
    "from_call",
    "mapping_of",
    "wrap",
]


def test_public_surface_is_pinned() -> None:
    assert errors.__all__ == EXPORTS


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_has_its_own_class(code: grpc.StatusCode) -> None:
    cls = error_for(code)
    assert cls.code is code
    assert cls is error_for(code.value[0]) is error_for(code.name)
    assert issubclass(cls, ClientError) != issubclass(cls, ServerError)
    assert cls.__name__.lower() == code.name.replace("_", "").lower()
    assert code.name in (errors.__doc__ or "")  # the docstring draws the whole tree


def test_unknown_codes_and_ok_fall_back_to_the_base() -> None:
    assert error_for(0) is StatusError
    assert error_for(99) is StatusError
    assert error_for("NOPE") is StatusError


def test_a_domain_subclass_keeps_the_code_and_never_displaces_the_tree() -> None:
    class RegistryMiss(NotFound):
        domain = "registry.test"

    assert error_for(grpc.StatusCode.NOT_FOUND) is NotFound
    err = RegistryMiss("release '9.9' not found", resource=Resource("release", "9.9"))
    status = err.to_status(domain="ignored.because.the.class.names.one")
    back = StatusError.from_status(status)
    assert type(back) is NotFound
    assert (back.domain, back.resource) == ("", Resource("release", "9.9"))
    assert back.reason == ""  # no reason: no ErrorInfo at all


def test_invalid_argument_says_what_is_wrong_with_each_field() -> None:
    err = InvalidArgument(field_violations=[("id_card_number", "required")])
    assert err.message == "invalid request: id_card_number: required"
    assert str(err) == "INVALID_ARGUMENT: invalid request: id_card_number: required"
    assert err.field_violations == (FieldViolation("id_card_number", "required"),)


def test_round_trip_keeps_every_detail_including_unknown_types() -> None:
    unknown = any_pb2.Any()
    unknown.Pack(wrappers_pb2.StringValue(value="a report"))
    err = Unavailable(
        "the HIS is unavailable",
        reason="HIS_UNAVAILABLE",
        metadata={"rule": "real_name"},
        field_violations=[("a", "b")],
        precondition_violations=[("RULE", "subject", "why")],
        retry_delay=1.5,
        resource=Resource("hospital", "h-1", "", "not connected"),
        extra_details=[unknown],
    )
    status = err.to_status(domain="hospital.hplus")
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    back = StatusError.from_status(status, trailers=(("x-a", "1"),))
    assert type(back) is Unavailable
    assert (back.reason, back.domain, back.metadata) == (
        "HIS_UNAVAILABLE",
        "hospital.hplus",
        {"rule": "real_name"},
    )
    assert back.field_violations == err.field_violations
    assert back.precondition_violations == err.precondition_violations
    assert back.retry_delay == 1.5
    assert back.resource == err.resource
    assert back.extra_details == (unknown,)
    assert back.trailers == (("x-a", "1"),)
    assert back.to_status() == status  # a proxy sends on exactly what it received
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "hospital.hplus"
