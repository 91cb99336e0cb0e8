"""The hospital's appointment rules, enforced at the edge before the HIS is asked to write.

:class:`RuleGate` feeds the pure :class:`~frontend_server.rules.RuleEngine` with what the
HIS adapter can tell (the session, its slots' occupancy, the patient's own appointments)
and the hospital's local time, and raises :class:`~frontend_server.rules.RuleRefusal` when
the profile's rule variant forbids a hold, booking or cancellation.

How HIS data becomes the engine's inputs:

* a HIS slot is mapped to the engine's place: the one ``"day"`` (unlimited), ``"AM"`` /
  ``"PM"`` by its start (halves), the profile's fixed slot its start falls in (fixed
  slots), or the next free ticket within the doctor's quota (numbered tickets);
* each HIS slot's taken places (capacity - remaining) occupy its place; the patient's own
  active appointments are among them and are passed with their identity for the
  real-name rule (an unlimited HIS slot reports no count, so it occupies nothing);
* the doctor of a general clinic (no doctor id) is its department.

The HIS adapter has no "slot by id", so the gate keeps a :class:`SlotIndex` (slot id →
session) filled by every ``ListSlots`` the edge serves, and on a miss from the HIS's
change feed, else by listing the sessions of the booking window. That last path costs one
HIS read per session (seconds at a HIS's rate limit), so clients list a session's slots
before holding one, as the cloud does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Callable, Iterable

from frontend_server.adapters import (
    Appointment,
    HisAdapter,
    HisCapabilityError,
    Schedule,
    Slot,
)
from frontend_server.rules import (
    Booking,
    BookingStatus,
    Period,
    Place,
    RuleEngine,
    RuleVariant,
    Session,
)

__all__ = ["Clock", "RuleGate", "SlotIndex", "utc_now"]

Clock = Callable[[], dt.datetime]
"""Returns the current time, timezone-aware (the edge's clock seam)."""


_DISCOVERY_CONCURRENCY = 6
"""HIS reads in flight at once while indexing slots (below the adapters' pool of 8)."""


def utc_now() -> dt.datetime:
    """The wall clock (the default :data:`Clock`)."""
    return dt.datetime.now(dt.UTC)


_PERIODS = {"AM": Period.MORNING, "PM": Period.AFTERNOON, "EVE": Period.EVENING}
_ACTIVE = {"HELD": BookingStatus.HELD, "BOOKED": BookingStatus.BOOKED}
_STATUSES = {
    **_ACTIVE,
    "CANCELLED": BookingStatus.CANCELLED,
    "RELEASED": BookingStatus.RELEASED,
    "CHECKED_IN": BookingStatus.CHECKED_IN,
}


class SlotIndex:
    """Which session (schedule id and day) each HIS slot id belongs to."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[str, dt.date]] = {}
        self._schedules: set[str] = set()

    def note(self, slots: Iterable[Slot]) -> None:
        """Remembers the sessions of ``slots``."""
        for slot in slots:
            self._slots[slot.slot_id] = (slot.schedule_id, slot.start.date())
            self._schedules.add(slot.schedule_id)

    def indexed(self, schedule_id: str) -> bool:
        """Whether slots of this session were seen."""
        return schedule_id in self._schedules

    def get(self, slot_id: str) -> tuple[str, dt.date] | None:
        """The schedule id and day of a slot, if seen."""
        return self._slots.get(slot_id)


@dataclasses.dataclass(frozen=True)
class _Target:
    schedule: Schedule
    slot: Slot
    slots: tuple[Slot, ...]


class RuleGate:
    """Checks holds, bookings and cancellations against the profile's rules.

    Args:
        engine: the rule engine of the hospital's profile.
        adapter: the (paced) HIS adapter, for reads only.
        timezone: the hospital's IANA time zone (``business_hours.timezone``).
        clock: the current time (aware).
        index: where slot ids are looked up.
    """

    def __init__(
        self,
        engine: RuleEngine,
        adapter: HisAdapter,
        *,
        timezone: str,
        clock: Clock,
        index: SlotIndex,
    ) -> None:
        self._engine = engine
        self._adapter = adapter
        self._zone = zoneinfo.ZoneInfo(timezone)
        self._clock = clock
        self._index = index
        self._discovery: asyncio.Task[None] | None = None

    def now(self) -> dt.datetime:
        """The hospital's local wall-clock time (naive), as the engine takes it."""
        return self._local(self._clock())

    def _local(self, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            return value
        return value.astimezone(self._zone).replace(tzinfo=None)

    # -- the three checks -------------------------------------------------------------------

    async def check_hold(self, *, slot_id: str, patient_id: str) -> None:
        """Raises ``RuleRefusal`` when the rules forbid holding ``slot_id``.

        A slot the HIS does not list is left to the HIS to refuse (``NOT_FOUND``).
        """
        target = await self._target(slot_id)
        if target is None:
            return
        session, bookings, key = await self._inputs(target, patient_id)
        self._engine.hold(session, bookings, patient_id=patient_id, now=self.now(), place_key=key)

    async def check_book(self, *, patient_id: str, hold_id: str, slot_id: str) -> None:
        """Raises ``RuleRefusal`` when the rules forbid this booking.

        A held place keeps what was checked at hold time; only the hold itself is checked
        (lapsed or released: ``HOLD_EXPIRED``, by the hospital's clock).
        """
        if not hold_id:
            target = await self._target(slot_id)
            if target is None:
                return
            session, bookings, key = await self._inputs(target, patient_id)
            self._engine.book(
                session, bookings, patient_id=patient_id, now=self.now(), place_key=key
            )
            return
        hold = self._booking(await self._adapter.get_appointment(hold_id))
        if hold is None or hold.patient_id != patient_id or hold.status is BookingStatus.BOOKED:
            # Another patient's hold (PERMISSION_DENIED, PATIENT_MISMATCH) and a repeat of a
            # booking are the HIS's to answer, as before the rules were checked here.
            return
        # A held place keeps what was checked when it was granted: the session only names
        # the day here; the engine looks at the hold alone.
        session = Session(
            schedule_id=hold.schedule_id,
            doctor_id=hold.doctor_id,
            visit_date=hold.visit_date,
            period=Period.ALL_DAY,
            start=dt.time(0, 0),
            end=dt.time(23, 59),
        )
        self._engine.book(session, [], patient_id=patient_id, now=self.now(), hold=hold)

    async def check_cancel(self, *, appointment_id: str) -> None:
        """Raises ``RuleRefusal`` when the rules forbid cancelling ``appointment_id``."""
        booking = self._booking(await self._adapter.get_appointment(appointment_id))
        if booking is not None:
            self._engine.cancel(booking, now=self.now())

    # -- HIS data → engine inputs -------------------------------------------------------------

    async def _target(self, slot_id: str) -> _Target | None:
        found = self._index.get(slot_id)
        if found is None:
            # One discovery at a time, shared by every call that waits for it; a call cut
            # short by its deadline leaves it running, so the next call finds the slot
            # (found by the chaos run: concurrent holds on a cold edge each read every
            # session of a SOAP HIS, and each was cut short before the end).
            if self._discovery is None or self._discovery.done():
                self._discovery = asyncio.ensure_future(self._discover())
            await asyncio.shield(self._discovery)
            found = self._index.get(slot_id)
            if found is None:
                return None
        schedule_id, day = found
        schedules = await self._adapter.list_schedules(start=day, end=day)
        schedule = next((s for s in schedules if s.schedule_id == schedule_id), None)
        if schedule is None:
            return None
        slots = await self._adapter.list_slots(schedule_id)
        self._index.note(slots)
        slot = next((s for s in slots if s.slot_id == slot_id), None)
        if slot is None:
            return None
        return _Target(schedule=schedule, slot=slot, slots=slots)

    async def _discover(self) -> None:
        """Indexes the HIS's slots: from its change feed, else session by session."""
        try:
            changes = await self._adapter.get_changes(None)
        except HisCapabilityError:
            pass
        else:
            self._index.note(changes.slots)
            return
        today = self.now().date()
        end = today + dt.timedelta(days=self._engine.rules.booking_window_days)
        schedules = await self._adapter.list_schedules(start=today, end=end)
        # Session by session is one HIS read each: run them side by side, bounded, so a
        # cold edge finds an unlisted slot within a call's deadline. Sessions not indexed
        # yet go first: the next discovery reads what the last one did not reach.
        ordered = sorted(schedules, key=lambda s: self._index.indexed(s.schedule_id))
        gate = asyncio.Semaphore(_DISCOVERY_CONCURRENCY)

        async def index(schedule_id: str) -> None:
            async with gate:
                self._index.note(await self._adapter.list_slots(schedule_id))

        await asyncio.gather(*(index(s.schedule_id) for s in ordered))

    async def _inputs(
        self, target: _Target, patient_id: str
    ) -> tuple[Session, list[Booking], str | None]:
        schedule = target.schedule
        session = Session(
            schedule_id=schedule.schedule_id,
            doctor_id=_doctor(schedule.doctor_id, schedule.department_id),
            visit_date=schedule.visit_date,
            period=_PERIODS.get(schedule.period, Period.ALL_DAY),
            start=schedule.start,
            end=schedule.end,
        )
        own = [
            b
            for b in (self._booking(a) for a in await self._adapter.list_appointments(patient_id))
            if b is not None
        ]
        now = self.now()
        own_here: dict[str, Booking] = {}
        for b in own:
            if b.schedule_id == schedule.schedule_id and b.occupies(now):
                own_here.setdefault(b.booking_id, b)
        bookings: list[Booking] = [b for b in own if b.schedule_id != schedule.schedule_id]
        ticket = 0
        for slot in target.slots:
            mine = [b for b in own_here.values() if b.place.key == slot.slot_id]
            taken = slot.capacity - slot.remaining if slot.capacity > 0 else 0
            occupants: list[Booking | None] = [*mine, *([None] * max(taken - len(mine), 0))]
            for index, occupant in enumerate(occupants):
                key = self._place_key(session, slot)
                if key is None:
                    ticket += 1
                    key = str(ticket)
                place = Place(
                    key=key,
                    ticket_number=0,
                    window_start=self._local(slot.start),
                    window_end=self._local(slot.end),
                )
                bookings.append(
                    Booking(
                        booking_id=(
                            occupant.booking_id
                            if occupant is not None
                            else f"his:{slot.slot_id}:{index}"
                        ),
                        patient_id=occupant.patient_id if occupant is not None else "",
                        schedule_id=schedule.schedule_id,
                        doctor_id=session.doctor_id,
                        visit_date=session.visit_date,
                        place=place,
                        status=BookingStatus.BOOKED,
                    )
                )
        return session, bookings, self._place_key(session, target.slot)

    def _place_key(self, session: Session, slot: Slot) -> str | None:
        """The engine's place of a HIS slot (``None``: numbered, the next free ticket)."""
        rules = self._engine.rules
        start = self._local(slot.start)
        if rules.variant is RuleVariant.UNLIMITED:
            return "day"
        if rules.variant is RuleVariant.HALVES:
            return "AM" if start.time() < rules.morning_end else "PM"
        if rules.variant is RuleVariant.FIXED_SLOTS:
            first = session.at(session.start)
            step = dt.timedelta(minutes=rules.slot_minutes)
            index = max(start - first, dt.timedelta(0)) // step
            return f"{first + step * index:%H:%M}"
        return None

    def _booking(self, appointment: Appointment) -> Booking | None:
        """An appointment as the engine sees it (``None`` when the HIS gave no window).

        Its place key is its HIS slot id (only the session's own places are re-keyed).
        """
        status = _STATUSES.get(appointment.status)
        start, end = appointment.visit_start, appointment.visit_end
        if status is None or appointment.visit_date is None or start is None:
            return None
        window_start = self._local(start)
        window_end = self._local(end) if end is not None else window_start
        expires = appointment.hold_expires_at
        return Booking(
            booking_id=appointment.appointment_id or appointment.hold_id,
            patient_id=appointment.patient_id,
            schedule_id=appointment.schedule_id,
            doctor_id=_doctor(appointment.doctor_id, appointment.department_id),
            visit_date=appointment.visit_date,
            place=Place(
                key=appointment.slot_id,
                ticket_number=appointment.ticket_number,
                window_start=window_start,
                window_end=window_end,
            ),
            status=status,
            hold_expires_at=self._local(expires) if expires is not None else None,
        )


def _doctor(doctor_id: str, department_id: str) -> str:
    """The real-name rule's doctor: a general clinic counts as its department."""
    return doctor_id or f"department:{department_id}"
