"""The dialect-neutral interface every HIS adapter implements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    Capabilities,
    Changes,
    Charge,
    DailyLedger,
    Department,
    Doctor,
    Money,
    Patient,
    PatientRegistration,
    Payment,
    Quote,
    Refund,
    RegisteredPatient,
    Report,
    ReportSummary,
    Schedule,
    Slot,
)

__all__ = ["HisAdapter"]


@runtime_checkable
class HisAdapter(Protocol):
    """What the ``hplus.hospital.v1`` services need from a hospital's HIS.

    The one place the operations are documented: the dialect adapters subclass it
    (through :class:`~frontend_server.adapters._base.BaseAdapter`) and mark each
    implementation ``@override`` (mypy checks that every override is marked, and that a
    marked method overrides one here).

    Every call makes exactly one attempt within its deadline (no hidden retries, so the
    caller's retry policy and ledger see every write). Every method may raise
    :class:`HisUnavailable`, :class:`HisTimeout`, :class:`HisRejected` or
    :class:`HisProtocolError`; methods that need a capability raise
    :class:`HisCapabilityError` when :attr:`capabilities` lacks it. ``key`` is the cloud's
    idempotency key of a write; a dialect that stores none ignores it.
    """

    @property
    def dialect(self) -> str:
        """``rest``, ``soap`` or ``db``."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this HIS supports beyond the common operations."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def aclose(self) -> None:
        """Releases connections (HTTP session, pool); the adapter cannot be used afterwards."""
        ...

    # directory
    async def list_departments(self) -> tuple[Department, ...]:
        """Lists every department (a two-level tree through ``parent_id``).

        Returns:
            The departments.
        """
        ...

    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        """Lists doctors, all or of one department.

        Args:
            department_id: Department filter; empty for all.

        Returns:
            The doctors.
        """
        ...

    async def list_schedules(
        self,
        *,
        department_id: str = "",
        doctor_id: str = "",
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> tuple[Schedule, ...]:
        """Lists clinic sessions, optionally filtered.

        Args:
            department_id: Department filter.
            doctor_id: Doctor filter.
            start: First date (inclusive).
            end: Last date (inclusive).

        Returns:
            The sessions.
        """
        ...

    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        """Lists the places of one session.

        Args:
            schedule_id: The session.

        Returns:
            The slots.
        """
        ...

    async def list_slots_between(
        self, *, start: dt.date, end: dt.date | None = None
    ) -> tuple[Slot, ...]:
        """Lists the places of every session dated in ``[start, end]`` in one read.

        Raises:
            HisCapabilityError: ``bulk_slots`` is not supported.
        """
        ...

    async def get_changes(self, since: str | None = None) -> Changes:
        """Directory changes after a watermark.

        Args:
            since: The watermark of the previous call; None for everything.

        Returns:
            The changes and the next watermark (the latest change seen).

        Raises:
            HisCapabilityError: ``incremental_changes`` is not supported.
            ValueError: ``since`` is not a watermark this adapter issued.
        """
        ...

    # appointments
    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        """Holds one place of a slot.

        Args:
            slot_id: The slot.
            patient_id: The patient.
            key: Idempotency key (stored by an HIS that keeps one, ignored otherwise).
            payer: Neutral payer type.
            minutes: Hold time; 0 for the HIS's default.

        Returns:
            The hold (status HELD).
        """
        ...

    async def release_hold(self, hold_id: str) -> Appointment:
        """Releases a hold (releasing twice returns the same record).

        Args:
            hold_id: The hold.

        Returns:
            The appointment (RELEASED, or BOOKED if booked meanwhile).
        """
        ...

    async def book(
        self,
        *,
        patient_id: str,
        key: str,
        hold_id: str = "",
        slot_id: str = "",
        payer: str = "SELF",
        payment: Payment | None = None,
    ) -> Appointment:
        """Books a held place (``hold_id``) or a slot directly (``slot_id``).

        Args:
            patient_id: The patient.
            key: Idempotency key.
            hold_id: Hold to confirm.
            slot_id: Slot to book directly when there is no hold.
            payer: Neutral payer type.
            payment: Payment collected; None when paying at the hospital.

        Returns:
            The booking (status BOOKED).
        """
        ...

    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        """Cancels a booking (or releases a hold given its id).

        Args:
            appointment_id: Booking or hold id.
            patient_id: Its patient.
            key: Idempotency key.
            reason: Why.

        Returns:
            The appointment (CANCELLED, or RELEASED for a hold).
        """
        ...

    async def get_appointment(self, appointment_id: str) -> Appointment:
        """Reads a booking or hold by the HIS's id.

        Args:
            appointment_id: Booking or hold id.

        Returns:
            The appointment.

        Raises:
            HisRejected: NOT_FOUND.
        """
        ...

    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        """Finds the appointment a write with this key held, booked or cancelled.

        Args:
            key: Idempotency key.

        Returns:
            The appointment, or None when the HIS knows no such key.

        Raises:
            HisCapabilityError: ``appointment_query_by_key`` is not supported.
        """
        ...

    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        """Lists a patient's appointments.

        Args:
            patient_id: The patient.

        Returns:
            The appointments, newest visit first.
        """
        ...

    # billing
    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        """Lists a patient's unpaid bills.

        Args:
            patient_id: The patient.

        Returns:
            The bills, with their lines.
        """
        ...

    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        """Pre-settles bills: the split between insurance and cash.

        Args:
            patient_id: The patient.
            bill_ids: Bills to pay together.
            payer: Neutral payer type.

        Returns:
            The quote.
        """
        ...

    async def settle(
        self,
        *,
        patient_id: str,
        bill_ids: Sequence[str],
        payment: Payment,
        key: str,
        payer: str = "SELF",
    ) -> Charge:
        """Settles bills with a payment (its amount must equal the cash part).

        Args:
            patient_id: The patient.
            bill_ids: The bills.
            payment: Payment collected.
            key: Idempotency key.
            payer: Neutral payer type.

        Returns:
            The charge.
        """
        ...

    async def get_charge(self, charge_id: str) -> Charge:
        """Reads a charge by the HIS's id.

        Args:
            charge_id: The HIS's id.

        Returns:
            The charge.

        Raises:
            HisRejected: NOT_FOUND.
        """
        ...

    async def find_charge_by_key(self, key: str) -> Charge | None:
        """Finds the charge a settle with this key made.

        Args:
            key: Idempotency key.

        Returns:
            The charge, or None when the HIS knows no such key.

        Raises:
            HisCapabilityError: ``charge_query_by_key`` is not supported.
        """
        ...

    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        """Refunds (part of) a charge's cash.

        Args:
            charge_id: The charge.
            key: Idempotency key.
            amount: Cash to refund; None for all that is left.
            reason: Why.

        Returns:
            The refund.
        """
        ...

    async def get_refund(self, refund_id: str) -> Refund:
        """Reads a refund by the HIS's id.

        Args:
            refund_id: The HIS's id.

        Returns:
            The refund.

        Raises:
            HisRejected: NOT_FOUND.
        """
        ...

    async def find_refund_by_key(self, key: str) -> Refund | None:
        """Finds the refund a write with this key made.

        Args:
            key: Idempotency key.

        Returns:
            The refund, or None when the HIS knows no such key.

        Raises:
            HisCapabilityError: ``refund_query_by_key`` is not supported.
        """
        ...

    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        """The HIS's ledger of one day, for reconciliation.

        Args:
            day: The day, in the HIS's zone.

        Returns:
            The ledger; ``closed`` once the day is over in the HIS's zone.
        """
        ...

    # reports
    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        """Lists a patient's reports (archived ones flagged).

        Args:
            patient_id: The patient.

        Returns:
            The report summaries.
        """
        ...

    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report.

        Args:
            report_id: The report.
            patient_id: Its patient.

        Returns:
            The report.

        Raises:
            HisRejected: REPORT_ARCHIVED once archived (read it with
                :meth:`get_archived_report`).
        """
        ...

    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report through the slow archive path (also for archived ones).

        Args:
            report_id: The report.
            patient_id: Its patient.

        Returns:
            The report.
        """
        ...

    # patients
    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        """Registers a patient, or returns the existing record for a known document.

        Args:
            registration: Who.

        Returns:
            The record and whether it was created now.
        """
        ...

    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        """Finds patients by exactly one of document, card, phone (phone needs the name).

        Args:
            id_number: Document number.
            card_number: Hospital card number (or a card bound to the patient).
            phone: Mobile number (needs ``name``).
            name: Name.

        Returns:
            The matches.

        Raises:
            ValueError: Not exactly one criterion (or a phone without the name): a caller
                bug, refused before reaching the HIS.
        """
        ...
