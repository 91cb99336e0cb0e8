"""The appointment rule engine: pure decisions, no I/O, no clock of its own.

The caller (the appointment servicer, over its HIS adapter) passes the session, the bookings
that exist for the doctor that day and the current local time; the engine says which place a
hold or booking gets, or refuses with a reason from the contract's ``ErrorInfo`` reasons.
Every variant answers through the same three calls, :meth:`RuleEngine.hold`,
:meth:`RuleEngine.book` and :meth:`RuleEngine.cancel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from frontend_server.rules._errors import Reason, RuleRefusal
from frontend_server.rules._model import (
    AppointmentRules,
    Booking,
    BookingStatus,
    CancelDecision,
    HoldDecision,
    Place,
    PlaceAvailability,
    RuleVariant,
    Session,
)

__all__ = ["RuleEngine"]

_UNLIMITED_KEY = "day"


class RuleEngine:
    """Decides holds, bookings and cancellations under one hospital's rules.

    Args:
        rules: the hospital's rules (from its configuration profile).
    """

    def __init__(self, rules: AppointmentRules) -> None:
        self._rules = rules

    @property
    def rules(self) -> AppointmentRules:
        """The rules this engine applies."""
        return self._rules

    # -- what exists ---------------------------------------------------------------------

    def booking_opens_at(self, session: Session) -> datetime:
        """The instant the session becomes bookable (inclusive)."""
        first_day = session.visit_date - timedelta(days=self._rules.booking_window_days)
        return datetime.combine(first_day, self._rules.release_time)

    def cancel_deadline(self, place: Place) -> datetime:
        """Last instant a booking of ``place`` may be cancelled (inclusive)."""
        return place.window_start - timedelta(minutes=self._rules.cancel_cutoff_minutes)

    def same_day_cutoff(self, place: Place) -> datetime:
        """Instant same-day booking of ``place`` closes (exclusive: closed at this instant)."""
        return place.window_end - timedelta(minutes=self._rules.same_day_cutoff_minutes)

    def availability(
        self, session: Session, bookings: Iterable[Booking], *, now: datetime
    ) -> list[PlaceAvailability]:
        """Every place of the session with its free capacity at ``now``.

        For the UNLIMITED variant this is the one place the next booking would get.
        """
        active = self._occupying(session, bookings, now=now, exclude=None)
        out: list[PlaceAvailability] = []
        for place, capacity in self._places(session, active):
            taken = sum(1 for b in active if b.place.key == place.key)
            free = None if capacity is None else max(capacity - taken, 0)
            out.append(PlaceAvailability(place=place, free=free))
        return out

    # -- the hold → book → cancel contract ------------------------------------------------

    def hold(
        self,
        session: Session,
        bookings: Sequence[Booking],
        *,
        patient_id: str,
        now: datetime,
        place_key: str | None = None,
        hold_minutes: int | None = None,
    ) -> HoldDecision:
        """Grant a place to hold for ``patient_id``.

        Args:
            session: the session to book in.
            bookings: the doctor's holds and bookings on the session's day (all sessions,
                so the real-name rule can see them).
            patient_id: who holds.
            now: the hospital's local time.
            place_key: a specific place (from :meth:`availability`); ``None`` takes the
                first free one.
            hold_minutes: requested hold length; ``None`` for the default, capped at the
                rules' maximum.

        Returns:
            The place, its hold expiry and cancel deadline.

        Raises:
            RuleRefusal: ``SLOT_FULL`` or ``BOOKING_RULE_VIOLATED`` (see ``rule``).
        """
        place = self._grant(session, bookings, patient_id=patient_id, now=now, key=place_key)
        minutes = self._rules.hold_minutes if hold_minutes is None else hold_minutes
        minutes = max(1, min(minutes, self._rules.max_hold_minutes))
        return HoldDecision(
            place=place,
            hold_expires_at=now + timedelta(minutes=minutes),
            cancel_deadline=self.cancel_deadline(place),
        )

    def book(
        self,
        session: Session,
        bookings: Sequence[Booking],
        *,
        patient_id: str,
        now: datetime,
        hold: Booking | None = None,
        place_key: str | None = None,
    ) -> HoldDecision:
        """Confirm a booking: of a held place (``hold``) or directly of a free place.

        A hold keeps the place it was granted: the booking window, same-day cutoff and
        real-name rule were checked when it was granted.

        Raises:
            RuleRefusal: ``HOLD_EXPIRED`` (the hold lapsed or was released),
                ``SLOT_FULL`` or ``BOOKING_RULE_VIOLATED``.
        """
        if hold is None:
            place = self._grant(session, bookings, patient_id=patient_id, now=now, key=place_key)
            return HoldDecision(
                place=place, hold_expires_at=None, cancel_deadline=self.cancel_deadline(place)
            )
        if hold.patient_id != patient_id:
            raise RuleRefusal(
                Reason.BOOKING_RULE_VIOLATED, "patient_mismatch", "the hold is another patient's"
            )
        if hold.status is BookingStatus.BOOKED or hold.status is BookingStatus.CHECKED_IN:
            raise RuleRefusal(
                Reason.BOOKING_RULE_VIOLATED, "already_booked", "the hold is already booked"
            )
        if hold.status is not BookingStatus.HELD or not hold.occupies(now):
            raise RuleRefusal(Reason.HOLD_EXPIRED, "hold_expired", "the hold has lapsed")
        return HoldDecision(
            place=hold.place, hold_expires_at=None, cancel_deadline=self.cancel_deadline(hold.place)
        )

    def cancel(self, booking: Booking, *, now: datetime) -> CancelDecision:
        """Decide a cancellation (退号) of a booking, or the release of a hold.

        Raises:
            RuleRefusal: ``CANCEL_DEADLINE_PASSED`` after the deadline, or
                ``ALREADY_CHECKED_IN``.
        """
        if booking.status in (BookingStatus.CANCELLED, BookingStatus.RELEASED):
            return CancelDecision(status=booking.status, changed=False)
        if booking.status is BookingStatus.CHECKED_IN:
            raise RuleRefusal(Reason.ALREADY_CHECKED_IN, "checked_in", "the patient has checked in")
        if booking.status is BookingStatus.HELD:
            return CancelDecision(status=BookingStatus.RELEASED, changed=True)
        deadline = self.cancel_deadline(booking.place)
        if now > deadline:
            raise RuleRefusal(
                Reason.CANCEL_DEADLINE_PASSED,
                "cancel_cutoff",
                f"cancelling closed at {deadline:%Y-%m-%d %H:%M}",
            )
        return CancelDecision(status=BookingStatus.CANCELLED, changed=True)

    # -- internals -----------------------------------------------------------------------

    def _grant(
        self,
        session: Session,
        bookings: Sequence[Booking],
        *,
        patient_id: str,
        now: datetime,
        key: str | None,
    ) -> Place:
        rules = self._rules
        if now.date() > session.visit_date:
            raise RuleRefusal(Reason.BOOKING_RULE_VIOLATED, "session_over", "the day has passed")
        opens = self.booking_opens_at(session)
        if now < opens:
            raise RuleRefusal(
                Reason.BOOKING_RULE_VIOLATED,
                "booking_window",
                f"booking opens at {opens:%Y-%m-%d %H:%M}",
            )
        same_day = now.date() == session.visit_date
        if same_day and not rules.same_day_booking:
            raise RuleRefusal(
                Reason.BOOKING_RULE_VIOLATED, "same_day_booking", "no same-day booking"
            )
        if rules.real_name:
            for b in bookings:
                if (
                    b.patient_id == patient_id
                    and b.doctor_id == session.doctor_id
                    and b.visit_date == session.visit_date
                    and b.occupies(now)
                ):
                    raise RuleRefusal(
                        Reason.BOOKING_RULE_VIOLATED,
                        "real_name",
                        "one booking per patient per doctor per day",
                    )
        active = self._occupying(session, bookings, now=now, exclude=None)
        candidates = self._places(session, active)
        if key is not None:
            candidates = [(p, c) for p, c in candidates if p.key == key]
            if not candidates:
                raise RuleRefusal(
                    Reason.BOOKING_RULE_VIOLATED, "unknown_place", f"no place {key!r}"
                )
        # A place past its same-day cutoff is closed; if such a place still had room, the
        # cutoff (not capacity) is why the patient cannot book.
        closed_with_room = False
        for place, capacity in candidates:
            taken = sum(1 for b in active if b.place.key == place.key)
            has_room = capacity is None or taken < capacity
            if same_day and now >= self.same_day_cutoff(place):
                closed_with_room = closed_with_room or has_room
                continue
            if has_room:
                issued = [b for b in bookings if b.schedule_id == session.schedule_id]
                return self._numbered(place, capacity, active, issued)
        if closed_with_room:
            raise RuleRefusal(
                Reason.BOOKING_RULE_VIOLATED, "same_day_cutoff", "same-day booking has closed"
            )
        raise RuleRefusal(Reason.SLOT_FULL, "capacity", "no place is free")

    @staticmethod
    def _occupying(
        session: Session, bookings: Iterable[Booking], *, now: datetime, exclude: str | None
    ) -> list[Booking]:
        return [
            b
            for b in bookings
            if b.schedule_id == session.schedule_id and b.booking_id != exclude and b.occupies(now)
        ]

    def _places(self, session: Session, active: list[Booking]) -> list[tuple[Place, int | None]]:
        """The session's places with their capacities (``None``: unlimited)."""
        rules = self._rules
        start, end = session.at(session.start), session.at(session.end)
        if rules.variant is RuleVariant.UNLIMITED:
            place = Place(key=_UNLIMITED_KEY, ticket_number=0, window_start=start, window_end=end)
            return [(place, None)]
        if rules.variant is RuleVariant.HALVES:
            capacity = session.quota if session.quota is not None else rules.half_capacity
            halves: list[tuple[Place, int | None]] = []
            am_end = min(end, session.at(rules.morning_end))
            if am_end > start:
                halves.append(
                    (
                        Place(key="AM", ticket_number=0, window_start=start, window_end=am_end),
                        capacity,
                    )
                )
            pm_start = max(start, session.at(rules.afternoon_start))
            if end > pm_start:
                halves.append(
                    (
                        Place(key="PM", ticket_number=0, window_start=pm_start, window_end=end),
                        capacity,
                    )
                )
            return halves
        if rules.variant is RuleVariant.FIXED_SLOTS:
            capacity = session.quota if session.quota is not None else rules.slot_capacity
            step = timedelta(minutes=rules.slot_minutes)
            slots: list[tuple[Place, int | None]] = []
            index, slot_start = 0, start
            while slot_start + step <= end:
                slots.append(
                    (
                        Place(
                            key=f"{slot_start:%H:%M}",
                            ticket_number=index * capacity + 1,
                            window_start=slot_start,
                            window_end=slot_start + step,
                        ),
                        capacity,
                    )
                )
                index, slot_start = index + 1, slot_start + step
            return slots
        quota = session.quota if session.quota is not None else rules.ticket_quota
        per = timedelta(minutes=rules.minutes_per_ticket)
        tickets: list[tuple[Place, int | None]] = []
        for number in range(1, quota + 1):
            window_start = max(start, min(start + per * (number - 1), end - per))
            tickets.append(
                (
                    Place(
                        key=str(number),
                        ticket_number=number,
                        window_start=window_start,
                        window_end=min(window_start + per, end),
                    ),
                    1,
                )
            )
        return tickets

    def _numbered(
        self,
        place: Place,
        capacity: int | None,
        active: list[Booking],
        issued: list[Booking],
    ) -> Place:
        """The place with the ticket number the next booking in it gets."""
        variant = self._rules.variant
        if variant is RuleVariant.NUMBERED:
            return place
        if variant is RuleVariant.FIXED_SLOTS:
            in_place = [b.place.ticket_number for b in active if b.place.key == place.key]
            # Slot k owns tickets k*capacity+1 .. (k+1)*capacity; take the lowest free one.
            first = place.ticket_number
            free = next(n for n in range(first, first + (capacity or 1)) if n not in in_place)
            return _with_ticket(place, free)
        # UNLIMITED and HALVES number in order of booking and never reuse a number, not even
        # one freed by a cancellation: the queue at the hospital is in order of arrival.
        numbers = [b.place.ticket_number for b in issued if b.place.key == place.key]
        return _with_ticket(place, max(numbers, default=0) + 1)


def _with_ticket(place: Place, number: int) -> Place:
    return Place(
        key=place.key,
        ticket_number=number,
        window_start=place.window_start,
        window_end=place.window_end,
    )
