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
        """Releases connections; the adapter cannot be used afterwards."""
        ...

    # directory
    async def list_departments(self) -> tuple[Department, ...]:
        """Lists every department (a two-level tree through ``parent_id``)."""
        ...

    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        """Lists doctors, all or of one department."""
        ...

    async def list_schedules(
        self,
        *,
        department_id: str = "",
        doctor_id: str = "",
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> tuple[Schedule, ...]:
        """Lists clinic sessions, optionally filtered (dates inclusive)."""
        ...

    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        """Lists the places of one session."""
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
        """Directory changes after a watermark (all when None).

        Raises:
            HisCapabilityError: ``incremental_changes`` is not supported.
        """
        ...

    # appointments
    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        """Holds one place of a slot (0 minutes: the HIS's default hold time)."""
        ...

    async def release_hold(self, hold_id: str) -> Appointment:
        """Releases a hold (releasing twice returns the same record)."""
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
        """Books a held place (``hold_id``) or a slot directly (``slot_id``)."""
        ...

    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        """Cancels a booking (or releases a hold given its id)."""
        ...

    async def get_appointment(self, appointment_id: str) -> Appointment:
        """Reads a booking or hold by the HIS's id."""
        ...

    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        """Finds the appointment a write with this key held, booked or cancelled.

        Raises:
            HisCapabilityError: ``appointment_query_by_key`` is not supported.
        """
        ...

    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        """Lists a patient's appointments, newest visit first."""
        ...

    # billing
    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        """Lists a patient's unpaid bills."""
        ...

    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        """Pre-settles bills: the split between insurance and cash."""
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
        """Settles bills with a payment (its amount must equal the cash part)."""
        ...

    async def get_charge(self, charge_id: str) -> Charge:
        """Reads a charge by the HIS's id."""
        ...

    async def find_charge_by_key(self, key: str) -> Charge | None:
        """Finds the charge a settle with this key made.

        Raises:
            HisCapabilityError: ``charge_query_by_key`` is not supported.
        """
        ...

    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        """Refunds (part of) a charge's cash; None refunds all that is left."""
        ...

    async def get_refund(self, refund_id: str) -> Refund:
        """Reads a refund by the HIS's id."""
        ...

    async def find_refund_by_key(self, key: str) -> Refund | None:
        """Finds the refund a write with this key made.

        Raises:
            HisCapabilityError: ``refund_query_by_key`` is not supported.
        """
        ...

    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        """The HIS's ledger of one day, for reconciliation."""
        ...

    # reports
    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        """Lists a patient's reports (archived ones flagged)."""
        ...

    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report (``HisRejected`` REPORT_ARCHIVED once archived)."""
        ...

    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report through the slow archive path (also for archived ones)."""
        ...

    # patients
    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        """Registers a patient, or returns the existing record for a known document."""
        ...

    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        """Finds patients by exactly one of document, card, phone (phone needs the name)."""
        ...
