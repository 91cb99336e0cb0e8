"""State of one simulated hospital and the helpers every operation uses."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

from tools.his_sim._model import (
    CST,
    Appointment,
    Charge,
    HisError,
    Patient,
    Quote,
    Refund,
    Slot,
)
from tools.his_sim._seed import generate

__all__ = ["CoreState", "split_fee"]

_PAYER_SPLIT = {
    # payer: (fund share, personal account share) in percent of the total
    "SELF": (0, 0),
    "EMPLOYEE": (60, 10),
    "RESIDENT": (50, 0),
    "PUBLIC": (90, 0),
}


def split_fee(total: int, payer: str) -> tuple[int, int, int]:
    """Splits a total between insurance fund, personal account and cash.

    Args:
        total: Amount in fen.
        payer: Payer code.

    Returns:
        (fund, account, cash) in fen.
    """
    fund_pct, account_pct = _PAYER_SPLIT.get(payer, (0, 0))
    fund = total * fund_pct // 100
    account = total * account_pct // 100
    return fund, account, total - fund - account


class CoreState:
    """The records of one simulated hospital and the helpers every operation uses.

    Args:
        seed: Seed of the generated data.
        today: First day of the schedule horizon; defaults to the current date in UTC+8.
        clock: Source of the current time (aware); defaults to the wall clock.
        max_hold_seconds: Longest hold the HIS grants.
    """

    def __init__(
        self,
        seed: int,
        *,
        today: dt.date | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        max_hold_seconds: int = 900,
    ) -> None:
        self._clock = clock or (lambda: dt.datetime.now(CST))
        self.today = today or self._clock().astimezone(CST).date()
        self.seed = seed
        self.max_hold_seconds = max_hold_seconds
        self._rng = random.Random(seed * 7919 + 1)
        data = generate(seed, self.today)
        self.departments = {d.dept_id: d for d in data.departments}
        self.doctors = {d.doctor_id: d for d in data.doctors}
        self.schedules = {s.schedule_id: s for s in data.schedules}
        self.slots = {s.slot_id: s for s in data.slots}
        self._schedule_slots: dict[str, list[str]] = {}
        """Slot ids of each schedule: listing a session's slots must not scan every slot."""
        for slot in data.slots:
            self._schedule_slots.setdefault(slot.schedule_id, []).append(slot.slot_id)
        self.patients = {p.patient_id: p for p in data.patients}
        self.bills = {b.bill_id: b for b in data.bills}
        self.reports = {r.report_id: r for r in data.reports}
        self.appointments: dict[str, Appointment] = {}
        self.quotes: dict[str, Quote] = {}
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[str, Refund] = {}
        self.deleted: list[tuple[str, str, dt.datetime]] = []
        self._slot_appts: dict[str, list[str]] = {}
        self._last_stamp = dt.datetime.combine(self.today, dt.time(0), CST)
        self._counter = 0
        self.dirty: set[tuple[str, str]] = set()
        """(kind, id) of records changed since the last :meth:`take_dirty`, for mirrors."""
        self.report_reads: dict[str, int] = {}
        """How often each report's content was read."""

    # ----------------------------------------------------------------- helpers

    def now(self) -> dt.datetime:
        """Returns the current time in UTC+8."""
        return self._clock().astimezone(CST)

    def _stamp(self) -> dt.datetime:
        # Strictly increasing, so "changed after T" never misses a change made at T.
        now = self.now()
        if now <= self._last_stamp:
            now = self._last_stamp + dt.timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self.today:%y%m%d}{self._counter:06d}"

    def _mark(self, kind: str, key: str) -> None:
        self.dirty.add((kind, key))

    def take_dirty(self) -> set[tuple[str, str]]:
        """Returns and clears the set of changed records.

        Returns:
            (kind, id) pairs; kinds are DEPT, DOCTOR, SCHEDULE, SLOT, APPT, BILL, CHARGE,
            REFUND, PATIENT, REPORT.
        """
        dirty, self.dirty = self.dirty, set()
        return dirty

    def _touch_slot(self, slot: Slot) -> None:
        stamp = self._stamp()
        slot.version += 1
        slot.update_time = stamp
        sched = self.schedules[slot.schedule_id]
        sched.version += 1
        sched.update_time = stamp
        self._mark("SLOT", slot.slot_id)
        self._mark("SCHEDULE", sched.schedule_id)

    def _slot(self, slot_id: str) -> Slot:
        slot = self.slots.get(slot_id)
        if slot is None:
            raise HisError("NOT_FOUND", f"号源{slot_id}不存在")
        return slot

    def patient(self, patient_id: str) -> Patient:
        """Returns a patient by HIS id.

        Args:
            patient_id: HIS patient id.

        Returns:
            The patient.

        Raises:
            HisError: NOT_FOUND.
        """
        patient = self.patients.get(patient_id)
        if patient is None:
            raise HisError("NOT_FOUND", f"患者{patient_id}不存在")
        return patient

    def expire_holds(self) -> None:
        """Releases holds whose time has passed (the HIS's unlock job)."""
        now = self.now()
        for appt in self.appointments.values():
            if appt.status == "HELD" and appt.hold_expire is not None and appt.hold_expire <= now:
                appt.status = "RELEASED"
                appt.update_time = self._stamp()
                self._mark("APPT", appt.appt_id)
                self._touch_slot(self.slots[appt.slot_id])
