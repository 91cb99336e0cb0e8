"""Appointment rules: a pure engine deciding holds, bookings and cancellations.

Each hospital's profile picks a :class:`RuleVariant` and its parameters
(:class:`AppointmentRules`); every variant answers through :meth:`RuleEngine.hold`,
:meth:`RuleEngine.book` and :meth:`RuleEngine.cancel`, refusing with a :class:`RuleRefusal`
whose ``reason`` is the contract's ``ErrorInfo.reason``.
"""

from __future__ import annotations

from frontend_server.rules._engine import RuleEngine
from frontend_server.rules._errors import Reason, RuleRefusal
from frontend_server.rules._model import (
    ALLOWED_SLOT_MINUTES,
    AppointmentRules,
    Booking,
    BookingStatus,
    CancelDecision,
    HoldDecision,
    Period,
    Place,
    PlaceAvailability,
    RuleVariant,
    Session,
)

__all__ = [
    "ALLOWED_SLOT_MINUTES",
    "AppointmentRules",
    "Booking",
    "BookingStatus",
    "CancelDecision",
    "HoldDecision",
    "Period",
    "Place",
    "PlaceAvailability",
    "Reason",
    "RuleEngine",
    "RuleRefusal",
    "RuleVariant",
    "Session",
]
