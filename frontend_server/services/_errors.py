"""The edge's error table: its domain errors → the ``mesh.errors`` tree, in one place.

Every servicer of the edge is wrapped with ``@HOSPITAL_ERRORS.servicer`` (an
:class:`mesh.errors.ErrorMapping`); servicers raise tree errors for their own validation
(:class:`InvalidRequest`, ``mesh.errors.NotFound``, :class:`Unsupported`, …) and
:func:`translate` reports everything the HIS, the rules, the ledger and the queue raise.
Nothing else on the edge chooses a status code. The table:

==================================  ====================  ====================================
error                               code                  details
==================================  ====================  ====================================
``HisRejected``                     see :data:`REJECTIONS`  reason, ``vendor_code``; the field
                                                          the HIS refused (``BadRequest``)
``RuleRefusal`` (profile rules)     see :data:`RULE_REFUSALS`  the refusal's reason, ``rule``
                                                          and ``rule_text`` (also in the
                                                          message)
a replayed failure (ledger)         the recorded code     as recorded (:func:`replayed`)
``HisUnavailable``                  UNAVAILABLE           ``HIS_UNAVAILABLE``, metadata
                                                          ``cause``, ``dialect`` (below)
``HisTimeout`` (a read)             UNAVAILABLE           ``HIS_TIMEOUT``, same metadata
``HisProtocolError``                UNAVAILABLE           ``HIS_PROTOCOL_ERROR``, same
``HisCapabilityError``              UNIMPLEMENTED         ``OPERATION_UNSUPPORTED``
ledger errors                       their ``code``        their ``reason`` (+ ``RetryInfo``)
queue errors                        their ``code``        their ``reason`` (+ ``RetryInfo``)
anything else                       INTERNAL              correlation id; logged with its
                                                          traceback
==================================  ====================  ====================================

The ``cause`` metadata (``refused``, ``connect_timeout``, ``unreachable``, ``http_5xx``,
``vendor_outage``, ``read_timeout``, ``connection_lost``, ``adapter_closed``) says how the
adapter failed, so the cloud can tell a HIS that is down from a hospital network that does
not reach it (``mesh.attribution``).

A write whose HIS answer was lost reaches the table as the ledger's ``OperationUnknown``
(UNAVAILABLE, ``OPERATION_OUTCOME_UNKNOWN``): the key is UNKNOWN and a retry with it is
resolved against the HIS before it is answered (see common.proto).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from frontend_server.adapters import (
    HisCapabilityError,
    HisError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.ledger import (
    IdempotencyKeyInProgress,
    InvalidIdempotencyKey,
    LedgerError,
    OperationError,
)
from frontend_server.rules import Reason, RuleRefusal
from frontend_server.tasks import QueueFull, TaskQueueError
from mesh import errors

__all__ = [
    "ERROR_DOMAIN",
    "HOSPITAL_ERRORS",
    "REJECTIONS",
    "RULE_REFUSALS",
    "InvalidRequest",
    "PatientMismatch",
    "Unsupported",
    "his_failure",
    "rejection",
    "replayed",
    "rule_refusal",
    "translate",
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


class InvalidRequest(errors.InvalidArgument):
    """The request fails validation; each violation names the field and what is wrong.

    Args:
        violations: (field path, description) pairs, e.g. ``("id_card_number", "required")``.
    """

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        super().__init__(field_violations=violations)


class PatientMismatch(errors.PermissionDenied):
    """The record named belongs to another patient than the request's."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="PATIENT_MISMATCH")


class Unsupported(errors.Unimplemented):
    """This hospital does not offer the operation (profile mode or HIS capability)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="OPERATION_UNSUPPORTED")


def rejection(err: HisRejected) -> OperationError:
    """The recorded form of a HIS refusal (what a write's ledger entry keeps).

    Args:
        err: the refusal.

    Returns:
        Code, contract reason, the vendor's code (``ErrorInfo.metadata["vendor_code"]``)
        and, when the adapter knows which request field the HIS refused, a field
        violation naming it; the message is free of patient data (the vendor's text is
        never sent).
    """
    code, reason = REJECTIONS.get(err.reason, REJECTIONS[RejectReason.UNKNOWN])
    message = _MESSAGES.get(reason, reason)
    violations: tuple[tuple[str, str], ...] = ()
    if err.field:
        message = f"{message}: {err.field}"
        violations = ((err.field, f"refused by the HIS (vendor code {err.vendor_code})"),)
    return OperationError(
        code=code,
        reason=reason,
        message=message,
        metadata={"vendor_code": err.vendor_code} if err.vendor_code else {},
        violations=violations,
    )


def rule_refusal(err: RuleRefusal) -> OperationError:
    """The recorded form of a refusal by the hospital's appointment rules.

    Args:
        err: the refusal.

    Returns:
        Code and contract reason by :data:`RULE_REFUSALS`; the message says which rule
        refused and why in the rule's own words (``one booking per patient per doctor per
        day (rule real_name)``), and ``ErrorInfo.metadata`` carries both as ``rule`` and
        ``rule_text``. No patient data.
    """
    reason = err.reason.value
    return OperationError(
        code=RULE_REFUSALS[err.reason],
        reason=reason,
        message=f"{_MESSAGES.get(reason, reason)}: {err.message} (rule {err.rule})",
        metadata={"rule": err.rule, "rule_text": err.message},
    )


def replayed(error: OperationError) -> errors.StatusError:
    """A write's recorded failure, as the error every retry with its key gets.

    Args:
        error: the failure as the ledger recorded it.

    Returns:
        The tree error of its code, with its reason, metadata and field violations.
    """
    return errors.error_for(error.code)(
        error.message,
        reason=error.reason,
        metadata=error.metadata,
        field_violations=error.violations,
    )


def his_failure(err: HisError) -> dict[str, str]:
    """``ErrorInfo.metadata`` of a HIS failure: how it failed and which dialect.

    ``cause`` (one of ``frontend_server.adapters.CAUSES``) is what tells the HIS's own
    failures from the hospital network's when the cloud attributes a failed call;
    ``dialect`` names the vendor dialect; ``operation`` the canonical HIS operation.

    Args:
        err: the adapter's error.

    Returns:
        The metadata (keys only for what is known).
    """
    found = {"cause": err.cause, "dialect": err.dialect, "operation": err.operation}
    return {k: v for k, v in found.items() if v}


def translate(err: Exception) -> errors.StatusError | None:
    """The edge's table: a domain error → the tree error it is reported as.

    Args:
        err: what a servicer raised.

    Returns:
        The error to send, or ``None`` for an exception no table knows (a bug).
    """
    if isinstance(err, HisRejected):
        return replayed(rejection(err))
    if isinstance(err, RuleRefusal):
        return replayed(rule_refusal(err))
    if isinstance(err, HisUnavailable):
        return errors.Unavailable(
            "the HIS is unavailable", reason="HIS_UNAVAILABLE", metadata=his_failure(err)
        )
    if isinstance(err, HisTimeout):
        return errors.Unavailable(
            "the HIS did not answer in time", reason="HIS_TIMEOUT", metadata=his_failure(err)
        )
    if isinstance(err, HisProtocolError):
        log.warning("%s: unreadable HIS answer: %s", err.operation or "HIS call", err)
        return errors.Unavailable(
            "the HIS answer could not be read",
            reason="HIS_PROTOCOL_ERROR",
            metadata=his_failure(err),
        )
    if isinstance(err, HisCapabilityError):
        return Unsupported("this hospital's HIS cannot do this")
    if isinstance(err, LedgerError):
        retry = err.retry_after_seconds if isinstance(err, IdempotencyKeyInProgress) else None
        key = [("idempotency_key", err.message)] if isinstance(err, InvalidIdempotencyKey) else []
        return errors.error_for(err.code)(
            err.message, reason=err.reason, retry_delay=retry, field_violations=key
        )
    if isinstance(err, QueueFull):
        return errors.error_for(err.code)(
            "the task queue is full", reason=err.reason, retry_delay=err.retry_after_seconds
        )
    if isinstance(err, TaskQueueError):
        return errors.error_for(err.code)(str(err), reason=err.reason)
    return None


HOSPITAL_ERRORS = errors.ErrorMapping(domain=ERROR_DOMAIN, translate=translate, logger=log)
"""The edge's one error mapping: every servicer of the edge is wrapped with
``@HOSPITAL_ERRORS.servicer``, on the tunnel and on a listening port alike."""
