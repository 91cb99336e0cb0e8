"""The business core shared by every simulated HIS: state, rules and introspection.

Dialects translate their wire format to calls on :class:`HisCore` and render its records;
the core never sees a vendor field name.
"""

# Chinese vendor texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tools.his_sim._billing import BillingOps, LedgerLine
from tools.his_sim._idcard import is_valid_id_card
from tools.his_sim._model import (
    Appointment,
    Charge,
    Department,
    Doctor,
    HisError,
    Patient,
    Payment,
    Report,
    Schedule,
    Slot,
)
from tools.his_sim._state import split_fee

__all__ = ["Changes", "HisCore", "HisCounts", "LedgerLine", "SlotState"]


@dataclass(frozen=True)
class SlotState:
    """Live availability of a slot."""

    booked: int
    held: int
    remaining: int
    status: str
    """FREE, BUSY, BUSY_TENTATIVE or BUSY_UNAVAILABLE."""


@dataclass(frozen=True)
class Changes:
    """Reference data changed after a timestamp."""

    departments: list[Department]
    doctors: list[Doctor]
    schedules: list[Schedule]
    slots: list[Slot]
    deleted: list[tuple[str, str, dt.datetime]]
    """(kind, id, time) of deleted entities; kind is DEPT, DOCTOR, SCHEDULE or SLOT."""
    server_time: dt.datetime


@dataclass(frozen=True)
class HisCounts:
    """What the HIS holds, for tests."""

    holds: int
    """Appointments currently HELD."""
    bookings: int
    """Appointments currently BOOKED."""
    cancellations: int
    """Appointments CANCELLED."""
    charges: int
    """Charges ever settled."""
    refunds: int
    """Refunds ever recorded."""
    patients: int
    """Patient records."""


class HisCore(BillingOps):
    """State and rules of one simulated hospital.

    Args:
        seed: Seed of the generated data.
        today: First day of the schedule horizon; defaults to the current date in UTC+8.
        clock: Source of the current time (aware); defaults to the wall clock.
        max_hold_seconds: Longest hold the HIS grants.
    """

    # ----------------------------------------------------------------- directory

    def slot_state(self, slot: Slot) -> SlotState:
        """Computes live availability of a slot.

        Args:
            slot: The slot.

        Returns:
            Its state.
        """
        booked = held = 0
        for appt_id in self._slot_appts.get(slot.slot_id, ()):
            status = self.appointments[appt_id].status
            booked += status == "BOOKED"
            held += status == "HELD"
        sched = self.schedules[slot.schedule_id]
        if sched.suspended or self.now() > sched.end_at:
            return SlotState(booked, held, 0, "BUSY_UNAVAILABLE")
        if slot.capacity == 0:
            return SlotState(booked, held, 0, "FREE")
        remaining = max(slot.capacity - booked - held, 0)
        if remaining > 0:
            status = "FREE"
        elif held > 0:
            status = "BUSY_TENTATIVE"
        else:
            status = "BUSY"
        return SlotState(booked, held, remaining, status)

    def schedule_remaining(self, sched: Schedule) -> int:
        """Remaining places of a whole session (0 for unlimited).

        Args:
            sched: The schedule.

        Returns:
            Sum of its slots' remaining places.
        """
        ids = self._schedule_slots.get(sched.schedule_id, ())
        return sum(self.slot_state(self.slots[i]).remaining for i in ids)

    def schedule_capacity(self, sched: Schedule) -> int:
        """Total places of a session (0 for unlimited).

        Args:
            sched: The schedule.

        Returns:
            Sum of its slots' capacities.
        """
        return sum(self.slots[i].capacity for i in self._schedule_slots.get(sched.schedule_id, ()))

    def list_departments(self) -> list[Department]:
        """Lists departments in display order.

        Returns:
            Departments.
        """
        return sorted(self.departments.values(), key=lambda d: d.order)

    def list_doctors(self, dept_id: str = "") -> list[Doctor]:
        """Lists doctors, optionally of one department.

        Args:
            dept_id: Department filter; empty for all.

        Returns:
            Doctors by id.
        """
        return [
            d
            for d in sorted(self.doctors.values(), key=lambda d: d.doctor_id)
            if not dept_id or dept_id in d.dept_ids
        ]

    def list_schedules(
        self,
        *,
        dept_id: str = "",
        doctor_id: str = "",
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> list[Schedule]:
        """Lists sessions by date, period and department.

        Args:
            dept_id: Department filter.
            doctor_id: Doctor filter.
            start: First date (inclusive).
            end: Last date (inclusive).

        Returns:
            Schedules.
        """
        self.expire_holds()
        order = {"AM": 0, "PM": 1, "EVE": 2}
        return sorted(
            (
                s
                for s in self.schedules.values()
                if (not dept_id or s.dept_id == dept_id)
                and (not doctor_id or s.doctor_id == doctor_id)
                and (start is None or s.date >= start)
                and (end is None or s.date <= end)
            ),
            key=lambda s: (s.date, order[s.period], s.dept_id, s.schedule_id),
        )

    def slots_of(self, schedule_id: str) -> list[Slot]:
        """Lists the slots of a schedule by start time and ticket number.

        Args:
            schedule_id: The schedule.

        Returns:
            Slots.

        Raises:
            HisError: NOT_FOUND for an unknown schedule.
        """
        if schedule_id not in self.schedules:
            raise HisError("NOT_FOUND", f"排班{schedule_id}不存在")
        self.expire_holds()
        return self._sorted_slots(schedule_id)

    def _sorted_slots(self, schedule_id: str) -> list[Slot]:
        return sorted(
            (self.slots[i] for i in self._schedule_slots.get(schedule_id, ())),
            key=lambda s: (s.start, s.ticket_number, s.slot_id),
        )

    def slots_between(self, start: dt.date, end: dt.date | None = None) -> list[Slot]:
        """Lists the slots of every schedule dated in a range, in one read.

        The bulk read vendors offer to synchronise a whole booking horizon.

        Args:
            start: First date (inclusive).
            end: Last date (inclusive); None for no upper bound.

        Returns:
            Slots by schedule date, schedule id, start time and ticket number.
        """
        self.expire_holds()
        out: list[Slot] = []
        for sched in self.list_schedules(start=start, end=end):
            out.extend(self._sorted_slots(sched.schedule_id))
        return out

    def changes_since(self, since: dt.datetime | None) -> Changes:
        """Returns the reference data changed after ``since`` (all of it for None).

        Args:
            since: Exclusive lower bound of ``update_time``.

        Returns:
            The changes.
        """
        self.expire_holds()

        def newer(t: dt.datetime) -> bool:
            return since is None or t > since

        return Changes(
            [d for d in self.list_departments() if newer(d.update_time)],
            [d for d in self.list_doctors() if newer(d.update_time)],
            [s for s in self.list_schedules() if newer(s.update_time)],
            sorted(
                (s for s in self.slots.values() if newer(s.update_time)),
                key=lambda s: s.slot_id,
            ),
            [d for d in self.deleted if newer(d[2])],
            self._watermark(),
        )

    def _watermark(self) -> dt.datetime:
        # Later changes get a strictly greater stamp, so "changed after the watermark" never
        # misses one even when the clock has not moved.
        self._last_stamp = max(self._last_stamp, self.now())
        return self._last_stamp

    def suspend_schedule(self, schedule_id: str, reason: str) -> Schedule:
        """Stops a session (停诊), as a hospital clerk would.

        Args:
            schedule_id: The schedule.
            reason: Why.

        Returns:
            The schedule.

        Raises:
            HisError: NOT_FOUND.
        """
        sched = self.schedules.get(schedule_id)
        if sched is None:
            raise HisError("NOT_FOUND", f"排班{schedule_id}不存在")
        sched.suspended = True
        sched.suspend_reason = reason
        sched.version += 1
        sched.update_time = self._stamp()
        self._mark("SCHEDULE", schedule_id)
        return sched

    def delete_schedule(self, schedule_id: str) -> None:
        """Withdraws an unbooked session and its slots (published by mistake).

        Args:
            schedule_id: The schedule.

        Raises:
            HisError: NOT_FOUND.
        """
        sched = self.schedules.pop(schedule_id, None)
        if sched is None:
            raise HisError("NOT_FOUND", f"排班{schedule_id}不存在")
        stamp = self._stamp()
        self.deleted.append(("SCHEDULE", schedule_id, stamp))
        self._mark("SCHEDULE", schedule_id)
        for slot_id in self._schedule_slots.pop(schedule_id, []):
            slot = self.slots.pop(slot_id)
            self.deleted.append(("SLOT", slot.slot_id, stamp))
            self._mark("SLOT", slot.slot_id)

    def rename_doctor(self, doctor_id: str, specialty: str) -> Doctor:
        """Changes a doctor's specialty text (a typical reference-data edit).

        Args:
            doctor_id: The doctor.
            specialty: New text.

        Returns:
            The doctor.

        Raises:
            HisError: NOT_FOUND.
        """
        doctor = self.doctors.get(doctor_id)
        if doctor is None:
            raise HisError("NOT_FOUND", f"医生{doctor_id}不存在")
        doctor.specialty = specialty
        doctor.version += 1
        doctor.update_time = self._stamp()
        self._mark("DOCTOR", doctor_id)
        return doctor

    # ----------------------------------------------------------------- appointments

    def _check_rules(self, patient: Patient, sched: Schedule) -> None:
        now = self.now()
        if sched.suspended:
            raise HisError("BOOKING_CLOSED", f"该排班已停诊: {sched.suspend_reason}")
        if now > sched.end_at:
            raise HisError("BOOKING_CLOSED", "该排班已过预约截止时间")
        age = (sched.date - patient.birth_date).days // 365
        if sched.min_age and age < sched.min_age:
            raise HisError("RULE_VIOLATED", f"该诊室仅接诊{sched.min_age}岁及以上患者")
        if sched.max_age and age > sched.max_age:
            raise HisError("RULE_VIOLATED", f"该诊室仅接诊{sched.max_age}岁及以下患者")
        if sched.required_gender and patient.gender != sched.required_gender:
            raise HisError("RULE_VIOLATED", "该诊室限定患者性别")
        # Real-name rule: one booking (or hold) per patient per doctor (or clinic) per day.
        for appt in self.appointments.values():
            if appt.patient_id != patient.patient_id or appt.status not in ("HELD", "BOOKED"):
                continue
            other = self.schedules.get(appt.schedule_id)
            if (
                other is not None
                and other.date == sched.date
                and other.dept_id == sched.dept_id
                and other.doctor_id == sched.doctor_id
            ):
                raise HisError("RULE_VIOLATED", "同一患者同一天同一医生只能预约一次")

    def _check_ref(self, ref: str, attr: str) -> None:
        if not ref:
            return
        for appt in self.appointments.values():
            if getattr(appt, attr) == ref:
                raise HisError("DUPLICATE_REF", f"订单号{ref}重复，已对应{appt.appt_id}")

    def _new_appt(self, slot: Slot, patient: Patient, payer: str) -> Appointment:
        sched = self.schedules[slot.schedule_id]
        state = self.slot_state(slot)
        if state.status == "BUSY_UNAVAILABLE":
            raise HisError("BOOKING_CLOSED", "该号源已停约或已过预约截止时间")
        if state.status != "FREE":
            raise HisError("SLOT_FULL", "号源已满")
        self._check_rules(patient, sched)
        fund, account, cash = split_fee(sched.fee, payer)
        now = self._stamp()
        appt = Appointment(
            appt_id="",
            hold_id="",
            status="HELD",
            patient_id=patient.patient_id,
            slot_id=slot.slot_id,
            schedule_id=sched.schedule_id,
            payer=payer,
            fee_total=sched.fee,
            fee_fund=fund + account,
            fee_cash=cash,
            ticket_number=0,
            visit_start=slot.start,
            visit_end=slot.end,
            create_time=now,
            update_time=now,
        )
        return appt

    def hold(
        self,
        slot_id: str,
        patient_id: str,
        *,
        payer: str = "SELF",
        seconds: int = 0,
        ref: str = "",
    ) -> Appointment:
        """Locks one place of a slot for a patient (锁号).

        Args:
            slot_id: The slot.
            patient_id: The patient.
            payer: Payer code (SELF, EMPLOYEE, RESIDENT, PUBLIC).
            seconds: Requested hold time; 0 or above the maximum gives the maximum.
            ref: Caller's reference, stored when the dialect accepts one.

        Returns:
            The appointment in status HELD.

        Raises:
            HisError: On any refusal.
        """
        self._check_ref(ref, "hold_ref")
        slot = self._slot(slot_id)
        patient = self.patient(patient_id)
        self.expire_holds()
        appt = self._new_appt(slot, patient, payer)
        appt.hold_id = appt.appt_id = self._next_id("SD")
        hold_for = seconds if 0 < seconds <= self.max_hold_seconds else self.max_hold_seconds
        appt.hold_expire = appt.create_time + dt.timedelta(seconds=hold_for)
        appt.hold_ref = ref
        self.appointments[appt.appt_id] = appt
        self._slot_appts.setdefault(slot_id, []).append(appt.appt_id)
        self._mark("APPT", appt.appt_id)
        self._touch_slot(slot)
        return appt

    def release(self, hold_id: str) -> Appointment:
        """Releases a hold; releasing a released or expired hold returns it unchanged.

        Args:
            hold_id: The hold.

        Returns:
            The appointment (RELEASED, or BOOKED if it was booked meanwhile).

        Raises:
            HisError: NOT_FOUND.
        """
        self.expire_holds()
        appt = self.appointments.get(hold_id) or next(
            (a for a in self.appointments.values() if a.hold_id == hold_id), None
        )
        if appt is None:
            raise HisError("NOT_FOUND", f"锁号记录{hold_id}不存在")
        if appt.status == "HELD":
            appt.status = "RELEASED"
            appt.update_time = self._stamp()
            self._mark("APPT", appt.appt_id)
            self._touch_slot(self.slots[appt.slot_id])
        return appt

    def book(
        self,
        patient_id: str,
        *,
        hold_id: str = "",
        slot_id: str = "",
        payer: str = "SELF",
        payment: Payment | None = None,
        ref: str = "",
    ) -> Appointment:
        """Confirms a booking of a held place or directly of a slot (挂号).

        Args:
            patient_id: The patient (must match the hold's).
            hold_id: Hold to confirm.
            slot_id: Slot to book directly when ``hold_id`` is empty.
            payer: Payer code.
            payment: Payment collected; None when paying at the hospital.
            ref: Caller's reference, stored when the dialect accepts one.

        Returns:
            The appointment in status BOOKED.

        Raises:
            HisError: On any refusal.
        """
        self._check_ref(ref, "book_ref")
        patient = self.patient(patient_id)
        self.expire_holds()
        if hold_id:
            appt = self.appointments.get(hold_id) or next(
                (a for a in self.appointments.values() if a.hold_id == hold_id), None
            )
            if appt is None:
                raise HisError("NOT_FOUND", f"锁号记录{hold_id}不存在")
            if appt.patient_id != patient_id:
                raise HisError("PATIENT_MISMATCH", "锁号记录与患者不符")
            if appt.status == "RELEASED":
                raise HisError("HOLD_EXPIRED", "锁号已过期或已解锁")
            if appt.status != "HELD":
                raise HisError("INVALID", "该锁号记录已挂号")
            slot = self.slots[appt.slot_id]
        elif slot_id:
            slot = self._slot(slot_id)
            appt = self._new_appt(slot, patient, payer)
            appt.hold_id = ""
        else:
            raise HisError("INVALID", "锁号ID与号源ID不能同时为空")
        if payment is not None and payment.method != "HOSPITAL" and payment.amount != appt.fee_cash:
            raise HisError(
                "AMOUNT_MISMATCH", f"支付金额{payment.amount}与应付金额{appt.fee_cash}不符(分)"
            )
        sched = self.schedules[slot.schedule_id]
        if sched.slot_mode == "NUMBERED":
            appt.ticket_number = slot.ticket_number
        else:
            # Tickets of cancelled bookings are not reissued, as at a real registration desk.
            taken = [
                a
                for a in self.appointments.values()
                if a.schedule_id == sched.schedule_id and a.ticket_number
            ]
            appt.ticket_number = len(taken) + 1
        now = self._stamp()
        old_id = appt.appt_id
        appt.appt_id = self._next_id("GH")
        if old_id:
            self.appointments.pop(old_id, None)
            self._mark("APPT", old_id)
            ids = self._slot_appts.setdefault(slot.slot_id, [])
            if old_id in ids:
                ids.remove(old_id)
        appt.status = "BOOKED"
        appt.hold_expire = None
        appt.payment = payment
        appt.receipt_number = self._next_id("SJ")
        appt.book_time = now
        appt.update_time = now
        appt.book_ref = ref
        appt.check_in_code = f"{self._rng.randrange(10**6):06d}"
        self.appointments[appt.appt_id] = appt
        self._slot_appts.setdefault(slot.slot_id, []).append(appt.appt_id)
        self._mark("APPT", appt.appt_id)
        self._touch_slot(slot)
        return appt

    def find_appointment(self, key: str) -> Appointment:
        """Finds an appointment by registration id or hold id.

        Args:
            key: Registration or hold id.

        Returns:
            The appointment.

        Raises:
            HisError: NOT_FOUND.
        """
        self.expire_holds()
        appt = self.appointments.get(key) or next(
            (a for a in self.appointments.values() if a.hold_id == key), None
        )
        if appt is None:
            raise HisError("NOT_FOUND", f"挂号记录{key}不存在")
        return appt

    def appointment_by_ref(self, ref: str) -> Appointment:
        """Finds the appointment a caller reference created, held or cancelled.

        Args:
            ref: The caller's reference.

        Returns:
            The appointment.

        Raises:
            HisError: NOT_FOUND.
        """
        self.expire_holds()
        for appt in self.appointments.values():
            if ref and ref in (appt.hold_ref, appt.book_ref, appt.cancel_ref):
                return appt
        raise HisError("NOT_FOUND", f"订单号{ref}无对应记录")

    def cancel(
        self, appt_id: str, patient_id: str, *, reason: str = "", ref: str = ""
    ) -> Appointment:
        """Cancels a booking (退号) and refunds its fee; cancelling twice is a no-op.

        Args:
            appt_id: Registration (or hold) id.
            patient_id: Must own the appointment.
            reason: Why.
            ref: Caller's reference.

        Returns:
            The appointment, CANCELLED (or RELEASED for a hold).

        Raises:
            HisError: On any refusal.
        """
        appt = self.find_appointment(appt_id)
        if appt.patient_id != patient_id:
            raise HisError("PATIENT_MISMATCH", "挂号记录与患者不符")
        if appt.status in ("CANCELLED", "RELEASED"):
            return appt
        if appt.status == "HELD":
            return self.release(appt.appt_id)
        sched = self.schedules.get(appt.schedule_id)
        if sched is None or self.now() >= sched.start_at:
            raise HisError("CANCEL_DEADLINE_PASSED", "已过退号截止时间")
        self._check_ref(ref, "cancel_ref")
        now = self._stamp()
        appt.status = "CANCELLED"
        appt.cancel_time = now
        appt.cancel_reason = reason
        appt.cancel_ref = ref
        appt.refund_receipt = self._next_id("TH")
        appt.update_time = now
        self._mark("APPT", appt.appt_id)
        if appt.slot_id in self.slots:
            self._touch_slot(self.slots[appt.slot_id])
        return appt

    def patient_appointments(self, patient_id: str) -> list[Appointment]:
        """Lists a patient's appointments, newest visit first.

        Args:
            patient_id: The patient.

        Returns:
            Appointments.
        """
        self.expire_holds()
        return sorted(
            (a for a in self.appointments.values() if a.patient_id == patient_id),
            key=lambda a: (a.visit_start, a.create_time),
            reverse=True,
        )

    # ----------------------------------------------------------------- reports

    def patient_reports(self, patient_id: str) -> list[Report]:
        """Lists a patient's reports that are not archived, newest first.

        Args:
            patient_id: The patient.

        Returns:
            Reports (archived ones are listed too, flagged).
        """
        self.patient(patient_id)
        return sorted(
            (r for r in self.reports.values() if r.patient_id == patient_id),
            key=lambda r: (r.issue_time or r.expected_time or self.now(), r.report_id),
            reverse=True,
        )

    def read_report(self, report_id: str, patient_id: str) -> Report:
        """Reads a report's content; archived reports are refused.

        Args:
            report_id: The report.
            patient_id: Must own the report.

        Returns:
            The report.

        Raises:
            HisError: NOT_FOUND, PATIENT_MISMATCH or ARCHIVED.
        """
        report = self.reports.get(report_id)
        if report is None:
            raise HisError("NOT_FOUND", f"报告{report_id}不存在")
        if report.patient_id != patient_id:
            raise HisError("PATIENT_MISMATCH", "报告与患者不符")
        if report.archived:
            raise HisError("ARCHIVED", f"报告{report_id}已归档，请到医院调阅")
        self.report_reads[report_id] = self.report_reads.get(report_id, 0) + 1
        return report

    def retrieve_archived(self, report_id: str, patient_id: str) -> Report:
        """Reads a report from the archive (slow path; works for archived and live reports).

        Args:
            report_id: The report.
            patient_id: Must own the report.

        Returns:
            The report.

        Raises:
            HisError: NOT_FOUND or PATIENT_MISMATCH.
        """
        report = self.reports.get(report_id)
        if report is None:
            raise HisError("NOT_FOUND", f"报告{report_id}不存在")
        if report.patient_id != patient_id:
            raise HisError("PATIENT_MISMATCH", "报告与患者不符")
        return report

    def archive_report(self, report_id: str) -> None:
        """Moves a report to the archive (it stops being readable online).

        Args:
            report_id: The report.

        Raises:
            HisError: NOT_FOUND.
        """
        report = self.reports.get(report_id)
        if report is None:
            raise HisError("NOT_FOUND", f"报告{report_id}不存在")
        if not report.archived:
            report.archived = True
            self._mark("REPORT", report_id)

    # ----------------------------------------------------------------- patients

    def register_patient(
        self,
        *,
        name: str,
        gender: str,
        birth_date: dt.date | None,
        id_type: str,
        id_number: str,
        phone: str,
        address: str = "",
        ethnicity: str = "",
        card_type: str = "",
        card_number: str = "",
        payer: str = "SELF",
    ) -> tuple[Patient, bool]:
        """Creates a patient record or returns the existing one (建档).

        Args:
            name: Full name.
            gender: M, F or U.
            birth_date: Date of birth; derived from a resident ID card when None.
            id_type: RESIDENT, PASSPORT or OTHER.
            id_number: Document number.
            phone: Mobile (11 digits).
            address: Address.
            ethnicity: Ethnic group name.
            card_type: Card to bind (SOCIAL, HEALTH) or "" for a new hospital card.
            card_number: Number of the card to bind.
            payer: Default payer.

        Returns:
            (patient, created).

        Raises:
            HisError: INVALID or IDENTITY_MISMATCH.
        """
        id_number = id_number.strip().upper()
        if not name.strip():
            raise HisError("INVALID", "姓名不能为空", param="name")
        if not id_number:
            raise HisError("INVALID", "证件号码不能为空", param="id_number")
        if id_type == "RESIDENT":
            if not is_valid_id_card(id_number):
                raise HisError("INVALID", "身份证号码校验失败", param="id_number")
            derived = dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
            if birth_date is not None and birth_date != derived:
                raise HisError("INVALID", "出生日期与身份证号码不符", param="birth_date")
            birth_date = derived
            sex = "M" if int(id_number[16]) % 2 else "F"
            if gender in ("M", "F") and gender != sex:
                raise HisError("INVALID", "性别与身份证号码不符", param="gender")
            gender = sex
        if birth_date is None:
            raise HisError("INVALID", "出生日期不能为空", param="birth_date")
        if phone and (len(phone) != 11 or not phone.isdigit()):
            raise HisError("INVALID", "手机号码格式错误", param="phone")
        for existing in self.patients.values():
            if existing.id_number == id_number and existing.id_type == id_type:
                if existing.name != name:
                    raise HisError("IDENTITY_MISMATCH", "证件号码已登记为其他姓名")
                if card_number and (card_type, card_number) not in existing.bound_cards:
                    existing.bound_cards.append((card_type, card_number))
                    existing.update_time = self._stamp()
                    self._mark("PATIENT", existing.patient_id)
                return existing, False
        now = self._stamp()
        patient = Patient(
            self._next_id("P"),
            name,
            gender or "U",
            birth_date,
            id_type,
            id_number,
            phone,
            address,
            ethnicity,
            f"JZK{self._rng.randrange(10**9):09d}",
            payer,
            "",
            now,
            now,
        )
        if card_number:
            patient.bound_cards.append((card_type, card_number))
        self.patients[patient.patient_id] = patient
        self._mark("PATIENT", patient.patient_id)
        return patient, True

    def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> list[Patient]:
        """Finds patients by exactly one of document, card or phone (phone needs the name).

        Args:
            id_number: Document number.
            card_number: Hospital card or a bound card.
            phone: Mobile.
            name: Name filter (required with ``phone``).

        Returns:
            Matches (at most 20).

        Raises:
            HisError: INVALID when not exactly one criterion is given.
        """
        given = [bool(id_number), bool(card_number), bool(phone)]
        if sum(given) != 1:
            raise HisError("INVALID", "证件号码、卡号、手机号须且只能填一项")
        if phone and not name:
            raise HisError("INVALID", "按手机号查询须提供姓名")
        out = []
        for p in sorted(self.patients.values(), key=lambda p: p.patient_id):
            if id_number and p.id_number != id_number.upper():
                continue
            cards = {p.card_number, *(c for _, c in p.bound_cards)}
            if card_number and card_number not in cards:
                continue
            if phone and p.phone != phone:
                continue
            if name and p.name != name:
                continue
            out.append(p)
        return out[:20]

    # ----------------------------------------------------------------- introspection

    def counts(self) -> HisCounts:
        """Counts what the HIS holds now.

        Returns:
            The counts.
        """
        self.expire_holds()
        statuses = [a.status for a in self.appointments.values()]
        return HisCounts(
            holds=statuses.count("HELD"),
            bookings=statuses.count("BOOKED"),
            cancellations=statuses.count("CANCELLED"),
            charges=len(self.charges),
            refunds=len(self.refunds),
            patients=len(self.patients),
        )

    def bookings(
        self, *, patient_id: str = "", slot_id: str = "", status: str = "BOOKED"
    ) -> list[Appointment]:
        """Lists appointments matching filters (tests' "exactly one booking" checks).

        Args:
            patient_id: Patient filter.
            slot_id: Slot filter.
            status: Status filter; empty for any.

        Returns:
            Appointments.
        """
        self.expire_holds()
        return [
            a
            for a in self.appointments.values()
            if (not patient_id or a.patient_id == patient_id)
            and (not slot_id or a.slot_id == slot_id)
            and (not status or a.status == status)
        ]

    def charges_of(self, patient_id: str) -> list[Charge]:
        """Lists a patient's charges.

        Args:
            patient_id: The patient.

        Returns:
            Charges.
        """
        return [c for c in self.charges.values() if c.patient_id == patient_id]

    def bookable_slot(
        self,
        *,
        patient_id: str,
        min_days_ahead: int = 1,
        mode: str = "",
        skip: int = 0,
    ) -> Slot:
        """Finds a free slot the patient may book (a test and demo helper).

        Args:
            patient_id: The patient whose rules (age, gender, one-per-doctor-per-day) apply.
            min_days_ahead: Only sessions at least this many days after ``today``.
            mode: Only schedules with this slot mode; empty for any.
            skip: Skip this many candidate slots (to pick different ones).

        Returns:
            A slot.

        Raises:
            HisError: NOT_FOUND when none qualifies.
        """
        patient = self.patient(patient_id)
        for sched in self.list_schedules(start=self.today + dt.timedelta(days=min_days_ahead)):
            if mode and sched.slot_mode != mode:
                continue
            try:
                self._check_rules(patient, sched)
            except HisError:
                continue
            for slot in self.slots_of(sched.schedule_id):
                if self.slot_state(slot).status == "FREE":
                    if skip == 0:
                        return slot
                    skip -= 1
                    break
        raise HisError("NOT_FOUND", "没有可预约的号源")
