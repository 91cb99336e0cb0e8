"""Domain errors → gRPC status, in one table, and the decorator that applies it.

Every servicer method is wrapped in :func:`rpc`; nothing else in the services package
chooses a status code. The table:

==================================  ====================  =================================
error                               code                  ``ErrorInfo.reason``
==================================  ====================  =================================
:class:`InvalidRequest`             INVALID_ARGUMENT      (``BadRequest`` field violations)
:class:`NotFound`                   NOT_FOUND             the error's reason
:class:`Unsupported`                UNIMPLEMENTED         ``OPERATION_UNSUPPORTED``
:class:`Failed` (replayed failure)  the recorded code     the recorded reason
``HisRejected``                     see :data:`REJECTIONS`
``RuleRefusal`` (profile rules)     see :data:`RULE_REFUSALS`  the refusal's reason (+ ``rule``)
``HisUnavailable``                  UNAVAILABLE           ``HIS_UNAVAILABLE``
``HisTimeout`` (a read)             UNAVAILABLE           ``HIS_TIMEOUT``
``HisProtocolError``                UNAVAILABLE           ``HIS_PROTOCOL_ERROR``
``HisCapabilityError``              UNIMPLEMENTED         ``OPERATION_UNSUPPORTED``
ledger errors                       their ``code``        their ``reason`` (+ ``RetryInfo``)
queue errors                        their ``code``        their ``reason`` (+ ``RetryInfo``)
anything else                       INTERNAL              none; logged with its traceback
==================================  ====================  =================================

A write whose HIS answer was lost reaches the table as the ledger's ``OperationUnknown``
(UNAVAILABLE, ``OPERATION_OUTCOME_UNKNOWN``): the key is UNKNOWN and a retry with it is
resolved against the HIS before it is answered (see common.proto).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from frontend_server.adapters import (
    HisCapabilityError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.ledger import IdempotencyKeyInProgress, LedgerError, OperationError
from frontend_server.rules import Reason, RuleRefusal
from frontend_server.tasks import QueueFull, TaskQueueError

__all__ = [
    "ERROR_DOMAIN",
    "REJECTIONS",
    "RULE_REFUSALS",
    "Failed",
    "InvalidRequest",
    "NotFound",
    "PatientMismatch",
    "ServiceError",
    "Unsupported",
    "abort_with",
    "rejection",
    "rpc",
    "rule_refusal",
]

log = logging.getLogger("frontend_server.services")

ERROR_DOMAIN = "hospital.hplus"
"""``ErrorInfo.domain`` of every error the hospital services send (as common.proto says)."""

REJECTIONS: dict[RejectReason, tuple[str, str]] = {
    RejectReason.SLOT_FULL: ("RESOURCE_EXHAUSTED", "SLOT_FULL"),
    RejectReason.BOOKING_RULE_VIOLATED: ("FAILED_PRECONDITION", "BOOKING_RULE_VIOLATED"),
    RejectReason.HOLD_EXPIRED: ("FAILED_PRECONDITION", "HOLD_EXPIRED"),
    RejectReason.AMOUNT_MISMATCH: ("FAILED_PRECONDITION", "AMOUNT_MISMATCH"),
    RejectReason.BILL_NOT_PAYABLE: ("FAILED_PRECONDITION", "BILL_NOT_PAYABLE"),
    RejectReason.INSUFFICIENT_AMOUNT: ("FAILED_PRECONDITION", "REFUND_EXCEEDS_CHARGE"),
    RejectReason.CANCEL_DEADLINE_PASSED: ("FAILED_PRECONDITION", "CANCEL_DEADLINE_PASSED"),
    RejectReason.BOOKING_CLOSED: ("FAILED_PRECONDITION", "BOOKING_CLOSED"),
    RejectReason.PATIENT_MISMATCH: ("PERMISSION_DENIED", "PATIENT_MISMATCH"),
    RejectReason.IDENTITY_MISMATCH: ("FAILED_PRECONDITION", "IDENTITY_MISMATCH"),
    RejectReason.REPORT_ARCHIVED: ("FAILED_PRECONDITION", "REPORT_ARCHIVED"),
    RejectReason.NOT_FOUND: ("NOT_FOUND", "HIS_NOT_FOUND"),
    RejectReason.INVALID_ARGUMENT: ("INVALID_ARGUMENT", "HIS_INVALID_ARGUMENT"),
    RejectReason.DUPLICATE_KEY: ("ALREADY_EXISTS", "HIS_DUPLICATE_KEY"),
    RejectReason.UNKNOWN: ("FAILED_PRECONDITION", "HIS_REFUSED"),
}
"""A HIS refusal's normalised reason → (status code name, contract reason)."""

RULE_REFUSALS: dict[Reason, str] = {
    Reason.SLOT_FULL: "RESOURCE_EXHAUSTED",
    Reason.BOOKING_RULE_VIOLATED: "FAILED_PRECONDITION",
    Reason.HOLD_EXPIRED: "FAILED_PRECONDITION",
    Reason.CANCEL_DEADLINE_PASSED: "FAILED_PRECONDITION",
    Reason.ALREADY_CHECKED_IN: "FAILED_PRECONDITION",
}
"""A refusal by the profile's appointment rules (checked at the edge) → status code name;
the contract reason is the refusal's own (appointment.proto)."""

_MESSAGES = {
    "SLOT_FULL": "no place is free in this slot",
    "BOOKING_RULE_VIOLATED": "a hospital rule refuses this booking",
    "HOLD_EXPIRED": "the hold has expired or was released",
    "AMOUNT_MISMATCH": "the payment differs from the amount due",
    "BILL_NOT_PAYABLE": "a bill is no longer payable",
    "REFUND_EXCEEDS_CHARGE": "the refund exceeds what is left of the charge",
    "CANCEL_DEADLINE_PASSED": "the cancellation deadline has passed",
    "BOOKING_CLOSED": "booking is closed for this session",
    "PATIENT_MISMATCH": "the record belongs to another patient",
    "IDENTITY_MISMATCH": "the document is known under another name",
    "REPORT_ARCHIVED": "the report is archived",
    "HIS_NOT_FOUND": "the HIS has no such record",
    "HIS_INVALID_ARGUMENT": "the HIS refused a parameter",
    "HIS_DUPLICATE_KEY": "the HIS already holds a write with this key",
    "HIS_REFUSED": "the HIS refused the operation",
    "ALREADY_CHECKED_IN": "the patient has checked in",
}


class ServiceError(Exception):
    """Base of the errors servicers raise themselves.

    Attributes:
        code: ``google.rpc.Code`` name.
        reason: ``ErrorInfo.reason`` (empty: no ErrorInfo).
        message: status message (never patient data).
    """

    code = "INTERNAL"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidRequest(ServiceError):
    """The request fails validation; carries ``BadRequest`` field violations.

    Args:
        violations: (field path, description) pairs.
    """

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        fields = ", ".join(f for f, _ in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = tuple(violations)


class NotFound(ServiceError):
    """The named record does not exist."""

    code = "NOT_FOUND"


class PatientMismatch(ServiceError):
    """The record named belongs to another patient than the request's."""

    code = "PERMISSION_DENIED"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="PATIENT_MISMATCH")


class Unsupported(ServiceError):
    """This hospital does not offer the operation (profile mode or HIS capability)."""

    code = "UNIMPLEMENTED"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="OPERATION_UNSUPPORTED")


class Failed(ServiceError):
    """A write's recorded failure, replayed with its original code and reason.

    Args:
        error: the failure as the ledger recorded it.
    """

    def __init__(self, error: OperationError) -> None:
        super().__init__(error.message, reason=error.reason)
        self.code = error.code


def rejection(err: HisRejected) -> OperationError:
    """The recorded form of a HIS refusal (what a write's ledger entry keeps).

    Args:
        err: the refusal.

    Returns:
        Code, contract reason and a message free of patient data.
    """
    code, reason = REJECTIONS.get(err.reason, REJECTIONS[RejectReason.UNKNOWN])
    return OperationError(code=code, reason=reason, message=_MESSAGES.get(reason, reason))


def rule_refusal(err: RuleRefusal) -> OperationError:
    """The recorded form of a refusal by the hospital's appointment rules.

    Args:
        err: the refusal.

    Returns:
        Code and contract reason by :data:`RULE_REFUSALS`; the message names the rule
        (e.g. ``booking_window``) and carries no patient data.
    """
    reason = err.reason.value
    return OperationError(
        code=RULE_REFUSALS[err.reason],
        reason=reason,
        message=f"{_MESSAGES.get(reason, reason)} (rule {err.rule})",
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _status(
    code: str,
    message: str,
    *,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
    retry_after: float | None = None,
) -> status_pb2.Status:
    details: list[any_pb2.Any] = []
    if reason:
        details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)))
    if violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in violations
                    ]
                )
            )
        )
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code_pb2.Code.Value(code), message=message, details=details)


def _status_for(err: BaseException, method: str) -> status_pb2.Status:
    """The table of the module docstring."""
    if isinstance(err, InvalidRequest):
        return _status(err.code, err.message, violations=err.violations)
    if isinstance(err, ServiceError):
        return _status(err.code, err.message, reason=err.reason)
    if isinstance(err, HisRejected):
        recorded = rejection(err)
        return _status(recorded.code, recorded.message, reason=recorded.reason)
    if isinstance(err, RuleRefusal):
        recorded = rule_refusal(err)
        return _status(recorded.code, recorded.message, reason=recorded.reason)
    if isinstance(err, HisUnavailable):
        return _status("UNAVAILABLE", "the HIS is unavailable", reason="HIS_UNAVAILABLE")
    if isinstance(err, HisTimeout):
        return _status("UNAVAILABLE", "the HIS did not answer in time", reason="HIS_TIMEOUT")
    if isinstance(err, HisProtocolError):
        log.warning("%s: unreadable HIS answer: %s", method, err)
        return _status(
            "UNAVAILABLE", "the HIS answer could not be read", reason="HIS_PROTOCOL_ERROR"
        )
    if isinstance(err, HisCapabilityError):
        return _status(
            "UNIMPLEMENTED", "this hospital's HIS cannot do this", reason="OPERATION_UNSUPPORTED"
        )
    if isinstance(err, IdempotencyKeyInProgress):
        return _status(
            err.code, err.message, reason=err.reason, retry_after=err.retry_after_seconds
        )
    if isinstance(err, LedgerError):
        return _status(err.code, err.message, reason=err.reason)
    if isinstance(err, QueueFull):
        return _status(
            err.code,
            "the task queue is full",
            reason=err.reason,
            retry_after=err.retry_after_seconds,
        )
    if isinstance(err, TaskQueueError):
        return _status(err.code, str(err), reason=err.reason)
    log.error("%s failed unexpectedly", method, exc_info=err)
    return _status("INTERNAL", "internal error")


async def abort_with(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> None:
    """Ends the call with ``status`` and its details (``grpc-status-details-bin``).

    Args:
        context: the call.
        status: what to send; its code and message become the call's.
    """
    s = rpc_status.to_status(status)
    await context.abort(s.code, s.details, s.trailing_metadata)
    raise AssertionError("unreachable: abort raises")


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def rpc(method: F) -> F:
    """Wraps a servicer method so every error leaves through the table above.

    Args:
        method: the servicer method ``(self, request, context)``.

    Returns:
        The wrapped method.
    """

    @functools.wraps(method)
    async def wrapper(
        self: object, request: object, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # this is the one place errors are mapped
            await abort_with(context, _status_for(err, method.__qualname__))

    return cast(F, wrapper)
