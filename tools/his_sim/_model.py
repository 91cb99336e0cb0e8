"""Vendor-neutral records held by every simulated HIS.

Each dialect renders these records in its own field names and codes; nothing here is seen
on the wire. Money is always an integer number of fen (0.01 CNY).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = [
    "CST",
    "Appointment",
    "Bill",
    "Charge",
    "Department",
    "Doctor",
    "FeeLine",
    "HisError",
    "ImagingContent",
    "LabContent",
    "Observation",
    "Patient",
    "Payment",
    "Quote",
    "Refund",
    "Report",
    "Schedule",
    "Slot",
]

CST = dt.timezone(dt.timedelta(hours=8), "CST")
"""China Standard Time: every simulated HIS keeps local time in UTC+8 (no daylight saving)."""


class HisError(Exception):
    """A refusal by the simulated HIS, in neutral terms; each dialect renders its own code.

    Attributes:
        code: Neutral reason, one of ``INVALID``, ``NOT_FOUND``, ``SLOT_FULL``,
            ``RULE_VIOLATED``, ``HOLD_EXPIRED``, ``AMOUNT_MISMATCH``, ``BILL_NOT_PAYABLE``,
            ``REFUND_EXCEEDS_CHARGE``, ``CANCEL_DEADLINE_PASSED``, ``IDENTITY_MISMATCH``,
            ``DUPLICATE_REF``, ``ARCHIVED``, ``PATIENT_MISMATCH``, ``BOOKING_CLOSED``,
            ``UNAVAILABLE``.
        message: Human-readable (Chinese) message as the vendor would show it.
        param: The request parameter refused, when the HIS can tell: a neutral name
            (``id_number``, as the core's arguments) that each dialect renders under its
            own parameter name, or already the dialect's name; "" when none.
    """

    def __init__(self, code: str, message: str, *, param: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.param = param


@dataclass
class Department:
    """A department (科室)."""

    dept_id: str
    name: str
    parent_id: str
    subject_code: str
    location: str
    description: str
    bookable: bool
    order: int
    version: int
    update_time: dt.datetime


@dataclass
class Doctor:
    """A doctor; ``title`` is CHIEF, ASSOCIATE_CHIEF, ATTENDING or RESIDENT."""

    doctor_id: str
    name: str
    title: str
    title_text: str
    dept_ids: list[str]
    gender: str
    specialty: str
    introduction: str
    photo_url: str
    bookable: bool
    version: int
    update_time: dt.datetime


@dataclass
class Schedule:
    """One clinic session.

    ``clinic_type`` is GENERAL, EXPERT or RENOWNED; ``period`` AM, PM or EVE; ``slot_mode``
    UNLIMITED, SESSION, TIMED or NUMBERED; ``required_gender`` is "", "M" or "F".
    """

    schedule_id: str
    dept_id: str
    doctor_id: str
    clinic_type: str
    date: dt.date
    period: str
    start: dt.time
    end: dt.time
    location: str
    reg_fee: int
    diag_fee: int
    slot_mode: str
    capacity: int
    suspended: bool
    suspend_reason: str
    min_age: int
    max_age: int
    required_gender: str
    version: int
    update_time: dt.datetime

    @property
    def fee(self) -> int:
        """Total fee of one visit in fen."""
        return self.reg_fee + self.diag_fee

    @property
    def start_at(self) -> dt.datetime:
        """Session start as an aware datetime."""
        return dt.datetime.combine(self.date, self.start, CST)

    @property
    def end_at(self) -> dt.datetime:
        """Session end as an aware datetime."""
        return dt.datetime.combine(self.date, self.end, CST)


@dataclass
class Slot:
    """A bookable unit of a schedule; ``capacity`` 0 means unlimited."""

    slot_id: str
    schedule_id: str
    start: dt.datetime
    end: dt.datetime
    capacity: int
    ticket_number: int
    version: int
    update_time: dt.datetime


@dataclass
class Patient:
    """A patient record; ``id_type`` is RESIDENT, PASSPORT or OTHER, ``payer`` a payer code."""

    patient_id: str
    name: str
    gender: str
    birth_date: dt.date
    id_type: str
    id_number: str
    phone: str
    address: str
    ethnicity: str
    card_number: str
    payer: str
    insurance_number: str
    create_time: dt.datetime
    update_time: dt.datetime
    bound_cards: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Payment:
    """A payment collected by the caller; ``method`` is WECHAT, ALIPAY, UNIONPAY or HOSPITAL."""

    method: str
    transaction_id: str
    merchant_order_id: str
    amount: int
    paid_time: dt.datetime | None


@dataclass
class Appointment:
    """A hold or booking; ``status`` is HELD, BOOKED, CANCELLED or RELEASED."""

    appt_id: str
    hold_id: str
    status: str
    patient_id: str
    slot_id: str
    schedule_id: str
    payer: str
    fee_total: int
    fee_fund: int
    fee_cash: int
    ticket_number: int
    visit_start: dt.datetime
    visit_end: dt.datetime
    create_time: dt.datetime
    update_time: dt.datetime
    hold_expire: dt.datetime | None = None
    receipt_number: str = ""
    payment: Payment | None = None
    book_time: dt.datetime | None = None
    cancel_time: dt.datetime | None = None
    cancel_reason: str = ""
    refund_receipt: str = ""
    hold_ref: str = ""
    book_ref: str = ""
    cancel_ref: str = ""
    check_in_code: str = ""


@dataclass
class FeeLine:
    """One line of a bill."""

    code: str
    name: str
    category: str
    quantity: str
    unit: str
    unit_price: int
    amount: int


@dataclass
class Bill:
    """An unpaid (or paid) prescription / order slip; ``status`` is UNPAID or PAID."""

    bill_id: str
    patient_id: str
    appt_id: str
    dept_id: str
    doctor_id: str
    title: str
    order_time: dt.datetime
    items: list[FeeLine]
    status: str = "UNPAID"

    @property
    def total(self) -> int:
        """Sum of the lines in fen."""
        return sum(item.amount for item in self.items)


@dataclass
class Quote:
    """A pre-settlement (预结算) of bills for a payer."""

    quote_id: str
    patient_id: str
    bill_ids: list[str]
    payer: str
    total: int
    fund: int
    account: int
    cash: int
    expire_time: dt.datetime


@dataclass
class Charge:
    """A settled charge; ``status`` is SETTLED, PARTIALLY_REFUNDED or REFUNDED."""

    charge_id: str
    patient_id: str
    bill_ids: list[str]
    payer: str
    total: int
    fund: int
    account: int
    cash: int
    payment: Payment
    status: str
    refunded_cash: int
    invoice_number: str
    guidance: str
    settle_time: dt.datetime
    caller_ref: str = ""


@dataclass
class Refund:
    """A refund of a charge (always SUCCEEDED in the simulators)."""

    refund_id: str
    charge_id: str
    patient_id: str
    cash: int
    total: int
    reason: str
    status: str
    create_time: dt.datetime
    complete_time: dt.datetime
    payment_method: str
    caller_ref: str = ""


@dataclass
class Observation:
    """One lab result; ``flag`` is N, L, H, LL, HH, POS or NEG."""

    code: str
    name: str
    abbreviation: str
    value: str
    numeric: bool
    unit: str
    low: str
    high: str
    range_text: str
    flag: str
    order: int


@dataclass
class LabContent:
    """Content of a lab report."""

    specimen: str
    collect_time: dt.datetime
    receive_time: dt.datetime
    observations: list[Observation]
    comment: str


@dataclass
class ImagingContent:
    """Content of an imaging report."""

    modality: str
    body_site: str
    method: str
    findings: str
    conclusion: str
    study_time: dt.datetime
    study_uid: str


@dataclass
class Report:
    """A lab or imaging report; ``kind`` LAB or IMAGING, ``status`` FINAL or REGISTERED."""

    report_id: str
    patient_id: str
    kind: str
    title: str
    status: str
    dept_id: str
    appt_id: str
    issue_time: dt.datetime | None
    expected_time: dt.datetime | None
    reporter: str
    verifier: str
    diagnosis: str
    archived: bool
    lab: LabContent | None = None
    imaging: ImagingContent | None = None

    @property
    def has_abnormal(self) -> bool:
        """True when any observation is flagged abnormal."""
        if self.lab is None:
            return False
        return any(obs.flag not in ("N", "NEG", "") for obs in self.lab.observations)
