from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta

import pytest

from frontend_server.rules import (
    AppointmentRules,
    Booking,
    BookingStatus,
    Period,
    Reason,
    RuleEngine,
    RuleRefusal,
    RuleVariant,
    Session,
)

DAY = date(2026, 12, 7)
OPEN = datetime(2026, 12, 1, 9, 0)  # well inside the default 7-day window


def session(
    *,
    start: time = time(8, 0),
    end: time = time(12, 0),
    doctor: str = "D1",
    schedule: str = "S1",
    quota: int | None = None,
    period: Period = Period.MORNING,
) -> Session:
    return Session(
        schedule_id=schedule,
        doctor_id=doctor,
        visit_date=DAY,
        period=period,
        start=start,
        end=end,
        quota=quota,
    )


def rules(variant: RuleVariant, **kw: object) -> AppointmentRules:
    return AppointmentRules(variant=variant, **kw)  # type: ignore[arg-type]


class Clinic:
    """Books patients one after another, keeping the bookings like a HIS would."""

    def __init__(self, engine: RuleEngine, sess: Session) -> None:
        self.engine = engine
        self.session = sess
        self.bookings: list[Booking] = []

    def book(self, patient: str, now: datetime = OPEN, key: str | None = None) -> Booking:
        decision = self.engine.book(
            self.session, self.bookings, patient_id=patient, now=now, place_key=key
        )
        booking = Booking(
            booking_id=f"B{len(self.bookings) + 1}",
            patient_id=patient,
            schedule_id=self.session.schedule_id,
            doctor_id=self.session.doctor_id,
            visit_date=self.session.visit_date,
            place=decision.place,
            status=BookingStatus.BOOKED,
        )
        self.bookings.append(booking)
        return booking

    def cancel(self, booking: Booking) -> None:
        index = self.bookings.index(booking)
        self.bookings[index] = dataclasses.replace(booking, status=BookingStatus.CANCELLED)


def refused(call: object) -> RuleRefusal:
    assert callable(call)
    with pytest.raises(RuleRefusal) as info:
        call()
    return info.value


# -- variants --------------------------------------------------------------------------


def test_unlimited_numbers_in_order_and_never_reuses_a_number() -> None:
    clinic = Clinic(RuleEngine(rules(RuleVariant.UNLIMITED)), session())
    booked = [clinic.book(f"P{i}") for i in range(200)]
    assert [b.place.ticket_number for b in booked] == list(range(1, 201))
    assert booked[0].place.window_start == datetime.combine(DAY, time(8, 0))
    assert booked[0].place.window_end == datetime.combine(DAY, time(12, 0))
    clinic.cancel(booked[-1])
    assert clinic.book("late").place.ticket_number == 201


@pytest.mark.parametrize(
    ("capacity", "want_am", "want_pm"),
    [(1, [1], [1]), (2, [1, 2], [1, 2]), (3, [1, 2, 3], [1, 2, 3])],
)
def test_halves_fill_the_morning_then_the_afternoon_then_refuse(
    capacity: int, want_am: list[int], want_pm: list[int]
) -> None:
    sess = session(end=time(17, 30), period=Period.ALL_DAY)
    clinic = Clinic(RuleEngine(rules(RuleVariant.HALVES, half_capacity=capacity)), sess)
    booked = [clinic.book(f"P{i}") for i in range(2 * capacity)]
    am = [b for b in booked if b.place.key == "AM"]
    pm = [b for b in booked if b.place.key == "PM"]
    assert [b.place.ticket_number for b in am] == want_am  # the last ticket of the half
    assert [b.place.ticket_number for b in pm] == want_pm
    assert am[0].place.window_end == datetime.combine(DAY, time(12, 0))
    assert pm[0].place.window_start == datetime.combine(DAY, time(13, 30))
    assert refused(lambda: clinic.book("one-too-many")).reason is Reason.SLOT_FULL


def test_halves_morning_only_session_has_no_afternoon() -> None:
    engine = RuleEngine(rules(RuleVariant.HALVES))
    places = engine.availability(session(), [], now=OPEN)
    assert [p.place.key for p in places] == ["AM"]
    assert places[0].free is None


@pytest.mark.parametrize("minutes", [5, 10, 15, 30])
def test_fixed_slots_of_each_length(minutes: int) -> None:
    engine = RuleEngine(rules(RuleVariant.FIXED_SLOTS, slot_minutes=minutes))
    clinic = Clinic(engine, session())
    count = 240 // minutes
    places = engine.availability(clinic.session, [], now=OPEN)
    assert len(places) == count
    assert places[0].place.key == "08:00"
    assert places[-1].place.window_end == datetime.combine(DAY, time(12, 0))
    booked = [clinic.book(f"P{i}") for i in range(count)]
    assert [b.place.ticket_number for b in booked] == list(range(1, count + 1))
    second = booked[1].place
    assert second.window_start == datetime.combine(DAY, time(8, 0)) + timedelta(minutes=minutes)
    assert second.window_end - second.window_start == timedelta(minutes=minutes)
    assert refused(lambda: clinic.book("extra")).reason is Reason.SLOT_FULL


def test_fixed_slots_with_capacity_and_a_chosen_slot() -> None:
    engine = RuleEngine(rules(RuleVariant.FIXED_SLOTS, slot_minutes=30, slot_capacity=2))
    clinic = Clinic(engine, session())
    first = clinic.book("A", key="09:00")
    second = clinic.book("B", key="09:00")
    assert (first.place.ticket_number, second.place.ticket_number) == (5, 6)
    assert refused(lambda: clinic.book("C", key="09:00")).reason is Reason.SLOT_FULL
    clinic.cancel(first)
    assert clinic.book("C", key="09:00").place.ticket_number == 5  # the freed ticket
    unknown = refused(lambda: clinic.book("D", key="09:10"))
    assert (unknown.reason, unknown.rule) == (Reason.BOOKING_RULE_VIOLATED, "unknown_place")


@pytest.mark.parametrize(("quota", "session_quota"), [(3, None), (30, 3), (1, None)])
def test_numbered_tickets_up_to_the_quota(quota: int, session_quota: int | None) -> None:
    engine = RuleEngine(rules(RuleVariant.NUMBERED, ticket_quota=quota, minutes_per_ticket=10))
    clinic = Clinic(engine, session(quota=session_quota))
    limit = session_quota if session_quota is not None else quota
    booked = [clinic.book(f"P{i}") for i in range(limit)]
    assert [b.place.ticket_number for b in booked] == list(range(1, limit + 1))
    assert booked[-1].place.ticket_number == limit  # the last quota ticket is granted
    assert refused(lambda: clinic.book("over")).reason is Reason.SLOT_FULL
    clinic.cancel(booked[0])
    assert clinic.book("again").place.ticket_number == 1  # a returned number is reused


def test_numbered_visit_windows_follow_the_ticket() -> None:
    engine = RuleEngine(rules(RuleVariant.NUMBERED, ticket_quota=30, minutes_per_ticket=10))
    clinic = Clinic(engine, session())
    tickets = [clinic.book(f"P{i}") for i in range(30)]
    assert tickets[11].place.window_start == datetime.combine(DAY, time(9, 50))
    assert tickets[11].place.window_end == datetime.combine(DAY, time(10, 0))
    # Tickets past the session's length are seen in its last window, never after it.
    assert tickets[29].place.window_end == datetime.combine(DAY, time(12, 0))


# -- cross-cutting rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (datetime(2026, 11, 30, 7, 59, 59, 999999), False),
        (datetime(2026, 11, 30, 8, 0), True),  # the exact release instant
        (datetime(2026, 11, 29, 23, 0), False),
        (datetime(2026, 12, 6, 22, 0), True),
    ],
)
def test_booking_window_opens_n_days_ahead_at_the_release_time(
    now: datetime, allowed: bool
) -> None:
    engine = RuleEngine(
        rules(RuleVariant.UNLIMITED, booking_window_days=7, release_time=time(8, 0))
    )
    clinic = Clinic(engine, session())
    assert engine.booking_opens_at(clinic.session) == datetime(2026, 11, 30, 8, 0)
    if allowed:
        clinic.book("P", now=now)
    else:
        err = refused(lambda: clinic.book("P", now=now))
        assert (err.reason, err.rule) == (Reason.BOOKING_RULE_VIOLATED, "booking_window")


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (datetime(2026, 12, 7, 11, 29, 59), True),
        (datetime(2026, 12, 7, 11, 30), False),  # the cutoff minute itself is closed
        (datetime(2026, 12, 7, 11, 45), False),
        (datetime(2026, 12, 8, 9, 0), False),  # the day has passed
    ],
)
def test_same_day_cutoff(now: datetime, allowed: bool) -> None:
    engine = RuleEngine(rules(RuleVariant.UNLIMITED, same_day_cutoff_minutes=30))
    clinic = Clinic(engine, session())
    if allowed:
        clinic.book("P", now=now)
    else:
        err = refused(lambda: clinic.book("P", now=now))
        assert err.reason is Reason.BOOKING_RULE_VIOLATED
        assert err.rule in ("same_day_cutoff", "session_over")


def test_same_day_fixed_slots_skip_slots_already_closed() -> None:
    engine = RuleEngine(rules(RuleVariant.FIXED_SLOTS, slot_minutes=15))
    clinic = Clinic(engine, session())
    at_nine = datetime(2026, 12, 7, 9, 0)
    assert clinic.book("P1", now=at_nine).place.key == "09:00"  # 08:45-09:00 closed at 09:00
    err = refused(lambda: clinic.book("P2", now=at_nine, key="08:45"))
    assert err.rule == "same_day_cutoff"


def test_same_day_booking_can_be_switched_off() -> None:
    engine = RuleEngine(rules(RuleVariant.UNLIMITED, same_day_booking=False))
    clinic = Clinic(engine, session())
    err = refused(lambda: clinic.book("P", now=datetime(2026, 12, 7, 7, 0)))
    assert err.rule == "same_day_booking"
    clinic.book("P", now=datetime(2026, 12, 6, 23, 59))


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (datetime(2026, 12, 7, 7, 0), True),  # exactly the deadline: still allowed
        (datetime(2026, 12, 7, 7, 0, 1), False),
        (datetime(2026, 12, 6, 20, 0), True),
    ],
)
def test_cancel_cutoff(now: datetime, allowed: bool) -> None:
    engine = RuleEngine(rules(RuleVariant.UNLIMITED, cancel_cutoff_minutes=60))
    clinic = Clinic(engine, session())
    booking = clinic.book("P")
    assert engine.cancel_deadline(booking.place) == datetime(2026, 12, 7, 7, 0)
    if allowed:
        decision = engine.cancel(booking, now=now)
        assert (decision.status, decision.changed) == (BookingStatus.CANCELLED, True)
    else:
        assert refused(lambda: engine.cancel(booking, now=now)).reason is (
            Reason.CANCEL_DEADLINE_PASSED
        )


def test_cancel_of_holds_checked_in_and_cancelled_bookings() -> None:
    engine = RuleEngine(rules(RuleVariant.UNLIMITED, cancel_cutoff_minutes=60))
    clinic = Clinic(engine, session())
    booking = clinic.book("P")
    late = datetime(2026, 12, 7, 11, 0)
    held = dataclasses.replace(booking, status=BookingStatus.HELD, hold_expires_at=late)
    assert engine.cancel(held, now=late).status is BookingStatus.RELEASED  # no deadline
    checked_in = dataclasses.replace(booking, status=BookingStatus.CHECKED_IN)
    assert refused(lambda: engine.cancel(checked_in, now=OPEN)).reason is (
        Reason.ALREADY_CHECKED_IN
    )
    cancelled = dataclasses.replace(booking, status=BookingStatus.CANCELLED)
    assert engine.cancel(cancelled, now=late).changed is False


@pytest.mark.parametrize("real_name", [True, False])
def test_real_name_one_booking_per_patient_per_doctor_per_day(real_name: bool) -> None:
    engine = RuleEngine(rules(RuleVariant.UNLIMITED, real_name=real_name))
    morning = Clinic(engine, session())
    morning.book("P")
    afternoon = session(start=time(13, 30), end=time(17, 0), schedule="S2")
    other_doctor = session(doctor="D2", schedule="S3")
    engine.book(other_doctor, morning.bookings, patient_id="P", now=OPEN)  # other doctor: fine
    if real_name:
        err = refused(lambda: engine.book(afternoon, morning.bookings, patient_id="P", now=OPEN))
        assert (err.reason, err.rule) == (Reason.BOOKING_RULE_VIOLATED, "real_name")
        morning.cancel(morning.bookings[0])  # a cancelled booking no longer counts
    engine.book(afternoon, morning.bookings, patient_id="P", now=OPEN)


# -- hold → book ----------------------------------------------------------------------


def test_hold_then_book_keeps_the_place_until_the_hold_expires() -> None:
    engine = RuleEngine(
        rules(RuleVariant.NUMBERED, ticket_quota=1, hold_minutes=10, max_hold_minutes=15)
    )
    sess = session()
    decision = engine.hold(sess, [], patient_id="P", now=OPEN)
    assert decision.hold_expires_at == OPEN + timedelta(minutes=10)
    hold = Booking(
        booking_id="H1",
        patient_id="P",
        schedule_id="S1",
        doctor_id="D1",
        visit_date=DAY,
        place=decision.place,
        status=BookingStatus.HELD,
        hold_expires_at=decision.hold_expires_at,
    )
    # The hold takes the only ticket...
    assert refused(lambda: engine.hold(sess, [hold], patient_id="Q", now=OPEN)).reason is (
        Reason.SLOT_FULL
    )
    # ...until it lapses.
    expiry = decision.hold_expires_at
    assert expiry is not None
    engine.hold(sess, [hold], patient_id="Q", now=expiry)
    booked = engine.book(sess, [hold], patient_id="P", now=expiry - timedelta(seconds=1), hold=hold)
    assert booked.place == decision.place
    assert booked.hold_expires_at is None
    assert refused(
        lambda: engine.book(sess, [hold], patient_id="P", now=expiry, hold=hold)
    ).reason is (Reason.HOLD_EXPIRED)
    err = refused(lambda: engine.book(sess, [hold], patient_id="Q", now=OPEN, hold=hold))
    assert err.rule == "patient_mismatch"
    capped = engine.hold(sess, [], patient_id="P", now=OPEN, hold_minutes=60)
    assert capped.hold_expires_at == OPEN + timedelta(minutes=15)


@pytest.mark.parametrize(
    "bad",
    [
        {"slot_minutes": 20},
        {"ticket_quota": 0},
        {"booking_window_days": -1},
        {"hold_minutes": 20, "max_hold_minutes": 15},
    ],
)
def test_rules_refuse_impossible_parameters(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        AppointmentRules(variant=RuleVariant.FIXED_SLOTS, **bad)  # type: ignore[arg-type]
