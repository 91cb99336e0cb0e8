"""Why the rules refuse: reasons shared with the contract's ``google.rpc.ErrorInfo``."""

from __future__ import annotations

import enum

__all__ = ["Reason", "RuleRefusal"]


class Reason(enum.StrEnum):
    """``ErrorInfo.reason`` values of ``hplus.hospital.v1.AppointmentService``."""

    SLOT_FULL = "SLOT_FULL"
    """No place is free (RESOURCE_EXHAUSTED)."""
    BOOKING_RULE_VIOLATED = "BOOKING_RULE_VIOLATED"
    """A hospital rule refuses the patient or the moment (FAILED_PRECONDITION)."""
    HOLD_EXPIRED = "HOLD_EXPIRED"
    """The hold lapsed or was released (FAILED_PRECONDITION)."""
    CANCEL_DEADLINE_PASSED = "CANCEL_DEADLINE_PASSED"
    """Too late to cancel (FAILED_PRECONDITION)."""
    ALREADY_CHECKED_IN = "ALREADY_CHECKED_IN"
    """The patient checked in; the booking can no longer be cancelled (FAILED_PRECONDITION)."""


class RuleRefusal(Exception):
    """The appointment rules refuse a hold, booking or cancellation.

    Args:
        reason: the machine reason, as sent in ``ErrorInfo.reason``.
        rule: which rule refused, e.g. ``"booking_window"``, ``"real_name"``,
            ``"same_day_cutoff"``; sent as ``ErrorInfo.metadata["rule"]``.
        message: a human explanation without patient data.
    """

    def __init__(self, reason: Reason, rule: str, message: str) -> None:
        super().__init__(f"{reason.value} ({rule}): {message}")
        self.reason = reason
        self.rule = rule
        self.message = message
