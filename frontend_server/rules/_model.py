"""The shapes the appointment rule engine works on: rules, sessions, bookings, decisions."""

from __future__ import annotations

import dataclasses
import enum
from datetime import date, datetime, time

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
    "RuleVariant",
    "Session",
]

ALLOWED_SLOT_MINUTES = frozenset({5, 10, 15, 30})
"""Slot lengths a FIXED_SLOTS hospital may use."""


class RuleVariant(enum.StrEnum):
    """How a hospital divides a doctor's session into bookable places."""

    UNLIMITED = "unlimited"
    """No limit per day; tickets are numbered in booking order; the window is the session."""
    HALVES = "halves"
    """A day splits into a morning and an afternoon half, each with its own capacity."""
    FIXED_SLOTS = "fixed_slots"
    """Timed slots of ``slot_minutes`` (5, 10, 15 or 30) from the session's start."""
    NUMBERED = "numbered"
    """Numbered queue tickets 1..quota per doctor and session; a cancelled number is reused."""


class Period(enum.StrEnum):
    """Half-day period of a session (the contract's ``SessionPeriod``)."""

    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"
    ALL_DAY = "all_day"


class BookingStatus(enum.StrEnum):
    """State of a booking as far as the rules care."""

    HELD = "held"
    """A place is held until ``hold_expires_at``."""
    BOOKED = "booked"
    """Booked and confirmed."""
    CHECKED_IN = "checked_in"
    """The patient checked in; no longer cancellable."""
    CANCELLED = "cancelled"
    """Cancelled; its place is free again."""
    RELEASED = "released"
    """A hold that was released or expired; its place is free again."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppointmentRules:
    """A hospital's appointment rules: the variant and its parameters.

    All times are the hospital's local wall-clock time (naive ``datetime`` / ``time``).
    """

    variant: RuleVariant
    """How sessions divide into places."""
    slot_minutes: int = 15
    """FIXED_SLOTS: length of one slot; one of 5, 10, 15, 30."""
    slot_capacity: int = 1
    """FIXED_SLOTS: patients per slot."""
    half_capacity: int | None = None
    """HALVES: places per half-day; ``None`` for no limit."""
    morning_end: time = time(12, 0)
    """HALVES: end of the morning half (the morning starts with the session)."""
    afternoon_start: time = time(13, 30)
    """HALVES: start of the afternoon half (it ends with the session)."""
    ticket_quota: int = 30
    """NUMBERED: tickets per doctor and session, unless the session sets its own quota."""
    minutes_per_ticket: int = 10
    """NUMBERED: expected consultation length, which spaces the tickets' visit windows."""
    booking_window_days: int = 7
    """A visit on day D may be booked from D minus this many days, at ``release_time``."""
    release_time: time = time(0, 0)
    """Time of day new days are released (inclusive: bookable from this instant)."""
    same_day_booking: bool = True
    """Whether a session may be booked on its own day at all."""
    same_day_cutoff_minutes: int = 0
    """Same-day booking closes this many minutes before the place's window ends (the cutoff
    instant itself is closed)."""
    cancel_cutoff_minutes: int = 0
    """Cancelling is allowed until this many minutes before the visit window starts (the
    deadline instant itself is still allowed)."""
    real_name: bool = True
    """Real-name rule: one active booking per patient per doctor per day."""
    hold_minutes: int = 10
    """How long a hold keeps its place by default."""
    max_hold_minutes: int = 15
    """Longest hold a caller may ask for."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.slot_minutes not in ALLOWED_SLOT_MINUTES:
            problems.append(f"slot_minutes must be one of 5, 10, 15, 30, got {self.slot_minutes}")
        for name in ("slot_capacity", "ticket_quota", "minutes_per_ticket", "hold_minutes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.half_capacity is not None and self.half_capacity < 1:
            problems.append(f"half_capacity must be >= 1, got {self.half_capacity}")
        for name in ("booking_window_days", "same_day_cutoff_minutes", "cancel_cutoff_minutes"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_hold_minutes < self.hold_minutes:
            problems.append("max_hold_minutes must be >= hold_minutes")
        if self.afternoon_start < self.morning_end:
            problems.append("afternoon_start must not be before morning_end")
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session:
    """One doctor's clinic session (出诊) on one day."""

    schedule_id: str
    """The HIS schedule id of the session."""
    doctor_id: str
    """The doctor; empty for a department's general clinic."""
    visit_date: date
    """Day of the session."""
    period: Period
    """Half-day period."""
    start: time
    """When the session starts."""
    end: time
    """When the session ends."""
    quota: int | None = None
    """Places the HIS releases for this session, overriding the rules' capacity (NUMBERED
    ticket quota, HALVES capacity per half, FIXED_SLOTS patients per slot)."""

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("session end must be after its start")
        if self.quota is not None and self.quota < 0:
            raise ValueError("session quota must be >= 0")

    def at(self, moment: time) -> datetime:
        """The instant ``moment`` on the session's day."""
        return datetime.combine(self.visit_date, moment)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Place:
    """A bookable place in a session: a slot, a half-day or a queue ticket."""

    key: str
    """Stable name of the place within its session: ``"09:15"`` (slot), ``"AM"`` / ``"PM"``
    (half), ``"12"`` (ticket) or ``"day"`` (unlimited)."""
    ticket_number: int
    """Queue ticket number (就诊序号) the booking gets."""
    window_start: datetime
    """Start of the window in which the patient should arrive."""
    window_end: datetime
    """End of that window."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Booking:
    """An existing hold or booking, as the engine needs to see it."""

    booking_id: str
    """HIS id of the hold or booking."""
    patient_id: str
    """The patient."""
    schedule_id: str
    """Session it belongs to."""
    doctor_id: str
    """Doctor of that session."""
    visit_date: date
    """Day of the visit."""
    place: Place
    """The place it occupies."""
    status: BookingStatus
    """Its state."""
    hold_expires_at: datetime | None = None
    """For a hold: when it lapses."""

    def occupies(self, now: datetime) -> bool:
        """Whether the booking takes up its place at ``now`` (an expired hold does not)."""
        if self.status is BookingStatus.HELD:
            return self.hold_expires_at is None or now < self.hold_expires_at
        return self.status in (BookingStatus.BOOKED, BookingStatus.CHECKED_IN)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlaceAvailability:
    """How many patients a place can still take."""

    place: Place
    """The place."""
    free: int | None
    """Free capacity; ``None`` when unlimited."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HoldDecision:
    """What the engine grants for a hold or a booking."""

    place: Place
    """The place granted, with its ticket number and visit window."""
    hold_expires_at: datetime | None
    """For a hold: when it lapses; ``None`` for a booking."""
    cancel_deadline: datetime
    """Last moment the patient may cancel."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CancelDecision:
    """What the engine decides for a cancellation."""

    status: BookingStatus
    """The booking's state afterwards: CANCELLED for a booking, RELEASED for a hold."""
    changed: bool
    """False when the booking was already cancelled or released (nothing to do)."""
