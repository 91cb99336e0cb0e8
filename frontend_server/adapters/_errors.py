"""Errors every HIS adapter raises, whatever the vendor dialect.

The hierarchy::

    HisError                      any failure talking to the HIS
    ├── HisUnavailable            outage, connection refused, 5xx: nothing was done
    ├── HisTimeout                the answer was lost: a write MAY have happened
    ├── HisRejected               a business refusal (vendor code + normalised reason)
    ├── HisProtocolError          a malformed answer (names the missing field or code)
    └── HisCapabilityError        the dialect cannot do this (e.g. no query by key)

Messages never carry patient identifiers: vendor texts are kept in
:attr:`HisRejected.vendor_message` (not in ``str(exc)``), so logging an exception is safe.
"""

from __future__ import annotations

import enum

__all__ = [
    "CAUSES",
    "HisCapabilityError",
    "HisError",
    "HisProtocolError",
    "HisRejected",
    "HisTimeout",
    "HisUnavailable",
    "RejectReason",
]


class RejectReason(enum.StrEnum):
    """Dialect-neutral reason of a business refusal; vendor codes map here by code table."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    SLOT_FULL = "SLOT_FULL"
    BOOKING_RULE_VIOLATED = "BOOKING_RULE_VIOLATED"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    BILL_NOT_PAYABLE = "BILL_NOT_PAYABLE"
    INSUFFICIENT_AMOUNT = "INSUFFICIENT_AMOUNT"
    """A refund larger than what is left of the charge."""
    CANCEL_DEADLINE_PASSED = "CANCEL_DEADLINE_PASSED"
    BOOKING_CLOSED = "BOOKING_CLOSED"
    PATIENT_MISMATCH = "PATIENT_MISMATCH"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
    REPORT_ARCHIVED = "REPORT_ARCHIVED"
    UNKNOWN = "UNKNOWN"
    """A vendor code missing from the ``error`` code table."""


class HisError(Exception):
    """Base of every adapter error.

    Attributes:
        operation: Canonical operation name (``"book"``, ``"list_departments"`` …).
        dialect: ``"rest"``, ``"soap"`` or ``"db"``.
        cause: How the call failed, for attributing it (see `CAUSES`); "" when not said.
    """

    def __init__(
        self, message: str, *, operation: str = "", dialect: str = "", cause: str = ""
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.dialect = dialect
        self.cause = cause


CAUSES = frozenset(
    {
        "refused",
        "connect_timeout",
        "unreachable",
        "http_5xx",
        "vendor_outage",
        "read_timeout",
        "connection_lost",
        "adapter_closed",
    }
)
"""How a HIS call failed, as far as the edge can tell (``ErrorInfo.metadata["cause"]``).

``refused``: nothing listens on the HIS port (the host answered: the HIS is down).
``connect_timeout`` / ``unreachable``: no TCP answer at all, or no route or name: the
hospital's network. ``http_5xx`` / ``vendor_outage``: the HIS answered that it fails.
``read_timeout``: connected, no answer in time. ``connection_lost``: the HIS dropped an
accepted connection. ``adapter_closed``: the edge closed its adapter (stopping)."""


class HisUnavailable(HisError):
    """The HIS is down or refused the connection; the operation was not carried out."""


class HisTimeout(HisError):
    """No answer within the deadline, or the connection dropped after the request was sent.

    For a write the outcome is unknown: the HIS may have committed it. The caller must find
    out by its idempotency key (its ledger, or the HIS where it can query by key) before
    retrying or compensating.

    Attributes:
        write: Whether the operation changes the HIS (so it may have happened).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        dialect: str = "",
        write: bool = False,
        cause: str = "read_timeout",
    ) -> None:
        super().__init__(message, operation=operation, dialect=dialect, cause=cause)
        self.write = write


class HisRejected(HisError):
    """The HIS refused the operation for a business reason; nothing was changed.

    Attributes:
        reason: Normalised reason.
        vendor_code: The vendor's own error code.
        vendor_message: The vendor's text (may quote patient data: do not log it unmasked).
        field: The contract request field the HIS refused (``id_card_number``), when the
            HIS named its parameter and the adapter knows which field it sent there;
            else "".
    """

    def __init__(
        self,
        reason: RejectReason,
        vendor_code: str,
        vendor_message: str = "",
        *,
        operation: str = "",
        dialect: str = "",
        field: str = "",
    ) -> None:
        refused = f" {field}" if field else ""
        super().__init__(
            f"{operation or 'HIS call'} refused{refused}: {reason} (vendor code {vendor_code})",
            operation=operation,
            dialect=dialect,
        )
        self.reason = reason
        self.vendor_code = vendor_code
        self.vendor_message = vendor_message
        self.field = field


class HisProtocolError(HisError):
    """The HIS answered something the adapter cannot read (a renamed field, a bad code).

    Attributes:
        field: The field (vendor name as configured) that was missing or malformed, or "".
    """

    def __init__(
        self, message: str, *, field: str = "", operation: str = "", dialect: str = ""
    ) -> None:
        super().__init__(message, operation=operation, dialect=dialect)
        self.field = field


class HisCapabilityError(HisError):
    """The dialect (or this HIS's settings) does not support the operation.

    Attributes:
        capability: The capability name, e.g. ``"appointment_query_by_key"``.
    """

    def __init__(self, capability: str, *, operation: str = "", dialect: str = "") -> None:
        super().__init__(
            f"the {dialect or 'HIS'} dialect does not support {capability}",
            operation=operation,
            dialect=dialect,
        )
        self.capability = capability
