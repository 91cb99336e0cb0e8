"""Dialect-neutral records the adapters return and accept (never proto messages).

Money is an integer number of fen plus a currency; dates are :class:`datetime.date`; times
of day :class:`datetime.time`; instants aware :class:`datetime.datetime` in the HIS's zone
(Asia/Shanghai by default). Coded values are the neutral codes listed in
:data:`frontend_server.adapters.NEUTRAL_CODES` (e.g. gender ``"M"``/``"F"``/``"U"``).

Patient identifiers (names, document numbers, phones, card numbers) are excluded from
``repr`` so a record can be logged without leaking them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = [
    "Appointment",
    "Bill",
    "BillItem",
    "Capabilities",
    "Changes",
    "Charge",
    "DailyLedger",
    "DeletedEntity",
    "Department",
    "Doctor",
    "ImagingResult",
    "LabResult",
    "LedgerEntry",
    "Money",
    "Observation",
    "Patient",
    "PatientCard",
    "PatientRegistration",
    "Payment",
    "Quote",
    "Refund",
    "RegisteredPatient",
    "Report",
    "ReportSummary",
    "Schedule",
    "Slot",
]


@dataclass(frozen=True, order=True)
class Money:
    """An amount of money.

    Attributes:
        fen: Integer amount in the currency's minor unit (fen for CNY).
        currency: ISO 4217 code.
    """

    fen: int
    currency: str = "CNY"


@dataclass(frozen=True)
class Capabilities:
    """What this HIS can do beyond the common operations.

    Attributes:
        incremental_changes: :meth:`HisAdapter.get_changes` works (else read in full).
        appointment_query_by_key: The HIS finds a booking by our idempotency key.
        charge_query_by_key: The HIS finds a charge by our idempotency key.
        refund_query_by_key: The HIS finds a refund by our idempotency key.
        hold: The HIS can hold (lock) a place before booking.
        archived_reports: Archived reports can be retrieved (slow path).
        bulk_slots: :meth:`HisAdapter.list_slots_between` works: the slots of a whole date
            range in one read (else one read per schedule).
    """

    incremental_changes: bool
    appointment_query_by_key: bool
    charge_query_by_key: bool
    refund_query_by_key: bool
    hold: bool = True
    archived_reports: bool = True
    bulk_slots: bool = False


@dataclass(frozen=True)
class Department:
    """A department (科室); parents group others and are not bookable."""

    department_id: str
    name: str
    parent_id: str
    subject_code: str
    location: str
    description: str
    bookable: bool
    sort_order: int
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Doctor:
    """A doctor; ``title`` is CHIEF, ASSOCIATE_CHIEF, ATTENDING or RESIDENT."""

    doctor_id: str
    name: str
    title: str
    title_text: str
    department_ids: tuple[str, ...]
    gender: str
    specialty: str
    introduction: str
    photo_url: str
    bookable: bool
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Schedule:
    """One clinic session (排班); ``doctor_id`` is "" for a general clinic.

    ``period`` is AM/PM/EVE, ``clinic_type`` GENERAL/EXPERT/RENOWNED, ``slot_mode``
    UNLIMITED/SESSION/TIMED/NUMBERED, ``required_gender`` "" (any) or M/F.
    """

    schedule_id: str
    department_id: str
    doctor_id: str
    visit_date: dt.date
    period: str
    start: dt.time
    end: dt.time
    location: str
    clinic_type: str
    registration_fee: Money
    diagnosis_fee: Money
    total_fee: Money
    slot_mode: str
    capacity: int
    remaining: int
    suspended: bool
    suspend_reason: str
    min_age: int
    max_age: int
    required_gender: str
    booking_deadline: dt.datetime | None = None
    cancel_deadline: dt.datetime | None = None
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Slot:
    """A bookable place (号源); ``capacity`` 0 means unlimited.

    ``status`` is FREE, FULL, HELD (all left places held) or UNAVAILABLE.
    """

    slot_id: str
    schedule_id: str
    ticket_number: int
    start: dt.datetime
    end: dt.datetime
    capacity: int
    remaining: int
    held: int
    status: str
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeletedEntity:
    """A schedule or slot the HIS deleted; ``kind`` is SCHEDULE or SLOT."""

    kind: str
    entity_id: str
    deleted_at: dt.datetime | None


@dataclass(frozen=True)
class Changes:
    """Directory entities changed after a watermark.

    Attributes:
        watermark: Opaque value to pass as ``since`` next time.
    """

    departments: tuple[Department, ...]
    doctors: tuple[Doctor, ...]
    schedules: tuple[Schedule, ...]
    slots: tuple[Slot, ...]
    deleted: tuple[DeletedEntity, ...]
    watermark: str


@dataclass(frozen=True)
class Payment:
    """A payment collected by the platform (or at the hospital, method HOSPITAL).

    ``method`` is WECHAT, ALIPAY, UNIONPAY or HOSPITAL.
    """

    method: str
    amount: Money
    transaction_id: str = ""
    merchant_order_id: str = ""
    paid_at: dt.datetime | None = None


@dataclass(frozen=True)
class Appointment:
    """A hold or booking; ``status`` is HELD, BOOKED, CANCELLED or RELEASED.

    ``appointment_id`` is "" while only held. ``idempotency_key`` is the key the HIS stored
    ("" when the dialect keeps none).
    """

    hold_id: str
    appointment_id: str
    status: str
    patient_id: str
    department_id: str
    doctor_id: str
    schedule_id: str
    slot_id: str
    visit_date: dt.date | None
    visit_start: dt.datetime | None
    visit_end: dt.datetime | None
    ticket_number: int
    location: str
    check_in_code: str
    payer: str
    fee_total: Money
    fee_insurance: Money
    fee_cash: Money
    receipt_number: str
    hold_expires_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    refund_receipt_number: str
    cancel_deadline: dt.datetime | None = None
    idempotency_key: str = ""


@dataclass(frozen=True)
class BillItem:
    """One line of an unpaid bill."""

    code: str
    name: str
    category: str
    quantity: str
    unit: str
    unit_price: Money
    amount: Money


@dataclass(frozen=True)
class Bill:
    """An unpaid bill (prescription or order, 处方)."""

    bill_id: str
    appointment_id: str
    department_id: str
    doctor_id: str
    title: str
    ordered_at: dt.datetime | None
    total: Money
    items: tuple[BillItem, ...]


@dataclass(frozen=True)
class Quote:
    """A pre-settlement: how a charge would split between insurance and cash."""

    quote_id: str
    total: Money
    fund: Money
    account: Money
    cash: Money
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Charge:
    """A settled charge; ``status`` is SETTLED, PARTIALLY_REFUNDED or REFUNDED."""

    charge_id: str
    patient_id: str
    bill_ids: tuple[str, ...]
    payer: str
    total: Money
    fund: Money
    account: Money
    cash: Money
    payment_method: str
    transaction_id: str
    status: str
    refunded: Money
    invoice_number: str
    guidance: str
    settled_at: dt.datetime | None
    idempotency_key: str = ""


@dataclass(frozen=True)
class Refund:
    """A refund of (part of) a charge; ``amount`` is the cash refunded."""

    refund_id: str
    charge_id: str
    status: str
    amount: Money
    total: Money
    reason: str
    requested_at: dt.datetime | None
    finished_at: dt.datetime | None
    idempotency_key: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the HIS's daily ledger.

    ``kind`` is REGISTRATION, REGISTRATION_REFUND, CHARGE or CHARGE_REFUND.
    """

    kind: str
    receipt_number: str
    patient_id: str
    appointment_id: str
    payer: str
    total: Money
    cash: Money
    payment_method: str
    transaction_id: str
    time: dt.datetime | None


@dataclass(frozen=True)
class DailyLedger:
    """The HIS's ledger of one day; ``closed`` once the day is over."""

    date: dt.date
    closed: bool
    entries: tuple[LedgerEntry, ...]


@dataclass(frozen=True)
class ReportSummary:
    """A report as listed; ``report_type`` LAB/IMAGING, ``status`` FINAL/PENDING."""

    report_id: str
    report_type: str
    title: str
    patient_id: str
    status: str
    archived: bool
    department_id: str
    appointment_id: str
    issued_at: dt.datetime | None
    expected_at: dt.datetime | None
    abnormal: bool


@dataclass(frozen=True)
class Observation:
    """One lab result line; ``flag`` is N, L, H, LL, HH, POS or NEG."""

    code: str
    name: str
    abbreviation: str
    value: str
    unit: str
    range_text: str
    low: str
    high: str
    flag: str
    order: int


@dataclass(frozen=True)
class LabResult:
    """Lab content of a report."""

    specimen: str
    collected_at: dt.datetime | None
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class ImagingResult:
    """Imaging content of a report."""

    modality: str
    body_part: str
    method: str
    findings: str
    conclusion: str
    study_uid: str


@dataclass(frozen=True)
class Report:
    """A report's content; exactly one of ``lab`` and ``imaging`` is set."""

    report_id: str
    report_type: str
    title: str
    diagnosis: str
    reporter: str
    verifier: str
    issued_at: dt.datetime | None
    lab: LabResult | None
    imaging: ImagingResult | None
    patient_name: str = field(default="", repr=False)


@dataclass(frozen=True)
class PatientCard:
    """A card bound to a patient; ``card_type`` HOSPITAL, SOCIAL, HEALTH or OTHER."""

    card_type: str
    card_number: str = field(repr=False)


@dataclass(frozen=True)
class Patient:
    """A patient as the HIS knows them; identifiers are hidden from ``repr``.

    ``gender`` M/F/U, ``id_type`` RESIDENT/PASSPORT/OTHER, ``payer``
    SELF/EMPLOYEE/RESIDENT/PUBLIC.
    """

    patient_id: str
    gender: str
    birth_date: dt.date | None
    id_type: str
    payer: str
    name: str = field(repr=False)
    id_number: str = field(repr=False)
    phone: str = field(repr=False)
    address: str = field(repr=False)
    ethnicity: str = field(repr=False)
    card_number: str = field(repr=False)
    cards: tuple[PatientCard, ...] = field(repr=False)
    insurance_number: str = field(repr=False)


@dataclass(frozen=True)
class PatientRegistration:
    """What it takes to register a patient (建档); identifiers hidden from ``repr``."""

    name: str = field(repr=False)
    id_number: str = field(repr=False)
    id_type: str = "RESIDENT"
    gender: str = ""
    birth_date: dt.date | None = None
    phone: str = field(default="", repr=False)
    address: str = field(default="", repr=False)
    ethnicity: str = ""
    card_type: str = "HOSPITAL"
    card_number: str = field(default="", repr=False)
    payer: str = "SELF"


@dataclass(frozen=True)
class RegisteredPatient:
    """Result of registering: the record and whether it was created now."""

    patient: Patient
    created: bool
