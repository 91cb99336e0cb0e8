"""Translation between the adapters' neutral records and ``hplus.hospital.v1`` messages.

Pure functions, no I/O. Neutral codes (``"SELF"``, ``"AM"``, ``"BOOKED"``) become contract
enums here and nowhere else; a code the contract has no value for becomes the enum's
UNSPECIFIED/OTHER value rather than an error, so one odd HIS record never fails a listing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from google.type import date_pb2, decimal_pb2, interval_pb2, money_pb2, timeofday_pb2

from frontend_server import adapters as d
from hplus.hospital.v1 import (
    appointment_pb2,
    billing_pb2,
    common_pb2,
    directory_pb2,
    patient_pb2,
    report_pb2,
)

__all__ = [
    "PAYERS",
    "appointment",
    "bill",
    "charge",
    "date",
    "department",
    "doctor",
    "fen",
    "from_date",
    "ledger_entry",
    "money",
    "patient",
    "payer_code",
    "payment_to_domain",
    "refund",
    "report",
    "report_summary",
    "schedule",
    "slot",
    "timestamp",
]

CURRENCY = "CNY"

PAYERS = {
    "SELF": common_pb2.PAYER_TYPE_SELF_PAY,
    "EMPLOYEE": common_pb2.PAYER_TYPE_EMPLOYEE_INSURANCE,
    "RESIDENT": common_pb2.PAYER_TYPE_RESIDENT_INSURANCE,
    "PUBLIC": common_pb2.PAYER_TYPE_PUBLIC_FUNDED,
}
_PAYER_CODES = {v: k for k, v in PAYERS.items()}
_METHODS = {
    "WECHAT": common_pb2.PAYMENT_METHOD_WECHAT_PAY,
    "ALIPAY": common_pb2.PAYMENT_METHOD_ALIPAY,
    "UNIONPAY": common_pb2.PAYMENT_METHOD_UNIONPAY,
    "HOSPITAL": common_pb2.PAYMENT_METHOD_PAY_AT_HOSPITAL,
}
_METHOD_CODES = {v: k for k, v in _METHODS.items()}
_GENDERS = {
    "M": common_pb2.GENDER_MALE,
    "F": common_pb2.GENDER_FEMALE,
    "U": common_pb2.GENDER_UNKNOWN,
}
_PERIODS = {
    "AM": common_pb2.SESSION_PERIOD_MORNING,
    "PM": common_pb2.SESSION_PERIOD_AFTERNOON,
    "EVE": common_pb2.SESSION_PERIOD_EVENING,
}
_APPOINTMENT_STATES = {
    "HELD": appointment_pb2.APPOINTMENT_STATUS_HELD,
    "BOOKED": appointment_pb2.APPOINTMENT_STATUS_BOOKED,
    "CANCELLED": appointment_pb2.APPOINTMENT_STATUS_CANCELLED,
    "RELEASED": appointment_pb2.APPOINTMENT_STATUS_HOLD_RELEASED,
}
_CLINICS = {
    "GENERAL": directory_pb2.CLINIC_TYPE_GENERAL,
    "EXPERT": directory_pb2.CLINIC_TYPE_EXPERT,
    "RENOWNED": directory_pb2.CLINIC_TYPE_RENOWNED_EXPERT,
}
_TITLES = {
    "CHIEF": directory_pb2.DOCTOR_TITLE_CHIEF_PHYSICIAN,
    "ASSOCIATE_CHIEF": directory_pb2.DOCTOR_TITLE_ASSOCIATE_CHIEF_PHYSICIAN,
    "ATTENDING": directory_pb2.DOCTOR_TITLE_ATTENDING_PHYSICIAN,
    "RESIDENT": directory_pb2.DOCTOR_TITLE_RESIDENT_PHYSICIAN,
}
_SLOT_MODES = {
    "UNLIMITED": directory_pb2.SLOT_MODE_UNLIMITED,
    "SESSION": directory_pb2.SLOT_MODE_SESSION,
    "TIMED": directory_pb2.SLOT_MODE_TIMED,
    "NUMBERED": directory_pb2.SLOT_MODE_NUMBERED,
}
_SLOT_STATES = {
    "FREE": directory_pb2.SLOT_STATUS_FREE,
    "FULL": directory_pb2.SLOT_STATUS_BUSY,
    "HELD": directory_pb2.SLOT_STATUS_BUSY_TENTATIVE,
    "UNAVAILABLE": directory_pb2.SLOT_STATUS_BUSY_UNAVAILABLE,
}
_CHARGE_STATES = {
    "SETTLED": billing_pb2.CHARGE_STATUS_SETTLED,
    "PARTIALLY_REFUNDED": billing_pb2.CHARGE_STATUS_PARTIALLY_REFUNDED,
    "REFUNDED": billing_pb2.CHARGE_STATUS_REFUNDED,
}
_REFUND_STATES = {
    "SUCCESS": billing_pb2.REFUND_STATUS_SUCCEEDED,
    "PENDING": billing_pb2.REFUND_STATUS_PENDING_APPROVAL,
    "FAILED": billing_pb2.REFUND_STATUS_REJECTED,
}
_LEDGER_KINDS = {
    "REGISTRATION": billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION,
    "REGISTRATION_REFUND": billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION_REFUND,
    "CHARGE": billing_pb2.LEDGER_ENTRY_KIND_CHARGE,
    "CHARGE_REFUND": billing_pb2.LEDGER_ENTRY_KIND_CHARGE_REFUND,
}
_REPORT_TYPES = {"LAB": report_pb2.REPORT_TYPE_LAB, "IMAGING": report_pb2.REPORT_TYPE_IMAGING}
_FLAGS = {
    "N": report_pb2.INTERPRETATION_NORMAL,
    "L": report_pb2.INTERPRETATION_LOW,
    "H": report_pb2.INTERPRETATION_HIGH,
    "LL": report_pb2.INTERPRETATION_CRITICAL_LOW,
    "HH": report_pb2.INTERPRETATION_CRITICAL_HIGH,
    "POS": report_pb2.INTERPRETATION_POSITIVE,
    "NEG": report_pb2.INTERPRETATION_NEGATIVE,
}
_CARDS = {
    "HOSPITAL": common_pb2.CARD_TYPE_HOSPITAL_CARD,
    "SOCIAL": common_pb2.CARD_TYPE_SOCIAL_SECURITY_CARD,
    "HEALTH": common_pb2.CARD_TYPE_ELECTRONIC_HEALTH_CARD,
    "OTHER": common_pb2.CARD_TYPE_OTHER,
}
_ID_TYPES = {
    "RESIDENT": common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
    "PASSPORT": common_pb2.ID_CARD_TYPE_PASSPORT,
    "OTHER": common_pb2.ID_CARD_TYPE_OTHER,
}


# -- scalars ----------------------------------------------------------------------------


def money(value: d.Money) -> money_pb2.Money:
    """A neutral amount as ``google.type.Money`` (fen → units + nanos)."""
    return money_pb2.Money(
        currency_code=value.currency or CURRENCY,
        units=value.fen // 100,
        nanos=(value.fen % 100) * 10_000_000,
    )


def fen(value: money_pb2.Money) -> int:
    """A ``google.type.Money`` in fen (the contract allows whole fen only)."""
    return value.units * 100 + value.nanos // 10_000_000


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """An aware datetime as a Timestamp (``None`` stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def date(value: dt.date | None) -> date_pb2.Date | None:
    """A date as ``google.type.Date``."""
    if value is None:
        return None
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def from_date(value: date_pb2.Date) -> dt.date | None:
    """A ``google.type.Date`` as a date (all zero: unset)."""
    if not value.year:
        return None
    return dt.date(value.year, value.month, value.day)


def _time_of_day(value: dt.time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=value.hour, minutes=value.minute, seconds=value.second)


def _set(message: object, field: str, value: object | None) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(value)


def payer_code(value: int) -> str:
    """A contract payer type as the neutral payer code (unset → self-pay)."""
    return _PAYER_CODES.get(common_pb2.PayerType.ValueType(value), "SELF")


def payment_to_domain(value: common_pb2.Payment) -> d.Payment | None:
    """A contract payment as the adapters' (``None`` for an unknown method)."""
    method = _METHOD_CODES.get(value.method)
    if method is None:
        return None
    paid_at = value.paid_time.ToDatetime(dt.UTC) if value.HasField("paid_time") else None
    return d.Payment(
        method=method,
        amount=d.Money(fen(value.amount), value.amount.currency_code or CURRENCY),
        transaction_id=value.transaction_id,
        merchant_order_id=value.merchant_order_id,
        paid_at=paid_at,
    )


def _fee(
    total: d.Money, *, fund: d.Money | None = None, account: d.Money | None = None, cash: d.Money
) -> common_pb2.FeeSummary:
    zero = d.Money(0, total.currency)
    return common_pb2.FeeSummary(
        total_amount=money(total),
        insurance_fund_amount=money(fund or zero),
        personal_account_amount=money(account or zero),
        cash_amount=money(cash),
    )


# -- directory --------------------------------------------------------------------------


def department(value: d.Department) -> directory_pb2.Department:
    """A department."""
    out = directory_pb2.Department(
        department_id=value.department_id,
        name=value.name,
        parent_department_id=value.parent_id,
        standard_subject_code=value.subject_code,
        location=value.location,
        description=value.description,
        bookable=value.bookable,
        display_order=value.sort_order,
    )
    _set(out, "update_time", timestamp(value.modified_at))
    return out


def doctor(value: d.Doctor) -> directory_pb2.Doctor:
    """A doctor."""
    out = directory_pb2.Doctor(
        doctor_id=value.doctor_id,
        name=value.name,
        title=_TITLES.get(value.title, directory_pb2.DOCTOR_TITLE_OTHER),
        title_text=value.title_text,
        department_ids=list(value.department_ids),
        gender=_GENDERS.get(value.gender, common_pb2.GENDER_UNSPECIFIED),
        specialty=value.specialty,
        introduction=value.introduction,
        photo_url=value.photo_url,
        bookable=value.bookable,
    )
    _set(out, "update_time", timestamp(value.modified_at))
    return out


def schedule(value: d.Schedule) -> directory_pb2.Schedule:
    """A clinic session; its status follows from suspension and remaining places."""
    if value.suspended:
        status = directory_pb2.SCHEDULE_STATUS_SUSPENDED
    elif value.slot_mode != "UNLIMITED" and value.remaining <= 0:
        status = directory_pb2.SCHEDULE_STATUS_FULL
    else:
        status = directory_pb2.SCHEDULE_STATUS_OPEN
    out = directory_pb2.Schedule(
        schedule_id=value.schedule_id,
        department_id=value.department_id,
        doctor_id=value.doctor_id,
        clinic_type=_CLINICS.get(value.clinic_type, directory_pb2.CLINIC_TYPE_UNSPECIFIED),
        date=date(value.visit_date),
        period=_PERIODS.get(value.period, common_pb2.SESSION_PERIOD_UNSPECIFIED),
        start_time=_time_of_day(value.start),
        end_time=_time_of_day(value.end),
        location=value.location,
        fee=_fee(value.total_fee, cash=value.total_fee),
        status=status,
        slot_mode=_SLOT_MODES.get(value.slot_mode, directory_pb2.SLOT_MODE_UNSPECIFIED),
        capacity=value.capacity,
        remaining=value.remaining,
        suspend_reason=value.suspend_reason,
        min_patient_age=value.min_age,
        max_patient_age=value.max_age,
        required_gender=_GENDERS.get(value.required_gender, common_pb2.GENDER_UNSPECIFIED),
    )
    _set(out, "update_time", timestamp(value.modified_at))
    return out


def slot(value: d.Slot) -> directory_pb2.Slot:
    """A bookable place."""
    out = directory_pb2.Slot(
        slot_id=value.slot_id,
        schedule_id=value.schedule_id,
        start_time=timestamp(value.start),
        end_time=timestamp(value.end),
        status=_SLOT_STATES.get(value.status, directory_pb2.SLOT_STATUS_UNSPECIFIED),
        capacity=value.capacity,
        remaining=value.remaining,
        ticket_number=value.ticket_number,
    )
    _set(out, "update_time", timestamp(value.modified_at))
    return out


# -- appointments and billing -----------------------------------------------------------


def appointment(value: d.Appointment, *, key: str = "") -> appointment_pb2.Appointment:
    """A hold or booking; a hold's id is its lock id until the HIS books it."""
    out = appointment_pb2.Appointment(
        appointment_id=value.appointment_id or value.hold_id,
        hold_id=value.hold_id,
        status=_APPOINTMENT_STATES.get(
            value.status, appointment_pb2.APPOINTMENT_STATUS_UNSPECIFIED
        ),
        patient=common_pb2.PatientRef(patient_id=value.patient_id),
        department_id=value.department_id,
        doctor_id=value.doctor_id,
        schedule_id=value.schedule_id,
        slot_id=value.slot_id,
        ticket_number=value.ticket_number,
        location=value.location,
        check_in_code=value.check_in_code,
        payer_type=PAYERS.get(value.payer, common_pb2.PAYER_TYPE_OTHER),
        fee=_fee(value.fee_total, fund=value.fee_insurance, cash=value.fee_cash),
        receipt_number=value.receipt_number,
        channel=(
            appointment_pb2.BOOKING_CHANNEL_PLATFORM
            if key
            else appointment_pb2.BOOKING_CHANNEL_UNSPECIFIED
        ),
        booking_idempotency_key=value.idempotency_key or key,
    )
    _set(out, "visit_date", date(value.visit_date))
    if value.visit_start is not None and value.visit_end is not None:
        out.visit_window.CopyFrom(
            interval_pb2.Interval(
                start_time=timestamp(value.visit_start), end_time=timestamp(value.visit_end)
            )
        )
    if value.status == "HELD":
        _set(out, "hold_expire_time", timestamp(value.hold_expires_at))
    if value.status == "CANCELLED":
        out.cancellation.CopyFrom(
            appointment_pb2.Cancellation(
                cancel_time=timestamp(value.cancelled_at),
                refund=_fee(value.fee_total, fund=value.fee_insurance, cash=value.fee_cash),
                refund_receipt_number=value.refund_receipt_number,
            )
        )
    return out


def bill(value: d.Bill) -> billing_pb2.PayableBill:
    """An unpaid bill, at self-pay prices."""
    items = [
        common_pb2.FeeItem(
            code=i.code,
            name=i.name,
            category=i.category,
            quantity=decimal_pb2.Decimal(value=i.quantity),
            unit=i.unit,
            unit_price=money(i.unit_price),
            amount=money(i.amount),
        )
        for i in value.items
    ]
    fee = _fee(value.total, cash=value.total)
    fee.items.extend(items)
    out = billing_pb2.PayableBill(
        bill_id=value.bill_id,
        appointment_id=value.appointment_id,
        department_id=value.department_id,
        doctor_id=value.doctor_id,
        title=value.title,
        fee=fee,
    )
    _set(out, "order_time", timestamp(value.ordered_at))
    return out


def charge(value: d.Charge, *, payment: common_pb2.Payment | None = None) -> billing_pb2.Charge:
    """A settled charge (``payment`` as the cloud sent it, when known)."""
    out = billing_pb2.Charge(
        charge_id=value.charge_id,
        patient=common_pb2.PatientRef(patient_id=value.patient_id),
        bill_ids=list(value.bill_ids),
        payer_type=PAYERS.get(value.payer, common_pb2.PAYER_TYPE_OTHER),
        fee=_fee(value.total, fund=value.fund, account=value.account, cash=value.cash),
        status=_CHARGE_STATES.get(value.status, billing_pb2.CHARGE_STATUS_UNSPECIFIED),
        refunded_amount=money(value.refunded),
        invoice_number=value.invoice_number,
        guidance=value.guidance,
        idempotency_key=value.idempotency_key,
    )
    if payment is not None:
        out.payment.CopyFrom(payment)
    else:
        out.payment.CopyFrom(
            common_pb2.Payment(
                method=_METHODS.get(value.payment_method, common_pb2.PAYMENT_METHOD_UNSPECIFIED),
                transaction_id=value.transaction_id,
                amount=money(value.cash),
            )
        )
    _set(out, "settle_time", timestamp(value.settled_at))
    return out


def refund(value: d.Refund) -> billing_pb2.Refund:
    """A refund."""
    out = billing_pb2.Refund(
        refund_id=value.refund_id,
        charge_id=value.charge_id,
        status=_REFUND_STATES.get(value.status, billing_pb2.REFUND_STATUS_UNSPECIFIED),
        fee=_fee(value.total, cash=value.amount),
        reason=value.reason,
        idempotency_key=value.idempotency_key,
    )
    _set(out, "create_time", timestamp(value.requested_at))
    _set(out, "complete_time", timestamp(value.finished_at))
    return out


def ledger_entry(value: d.LedgerEntry) -> billing_pb2.LedgerEntry:
    """One line of the HIS's daily ledger."""
    out = billing_pb2.LedgerEntry(
        kind=_LEDGER_KINDS.get(value.kind, billing_pb2.LEDGER_ENTRY_KIND_UNSPECIFIED),
        receipt_number=value.receipt_number,
        transaction_id=value.transaction_id,
        appointment_id=value.appointment_id,
        patient=common_pb2.PatientRef(patient_id=value.patient_id),
        payer_type=PAYERS.get(value.payer, common_pb2.PAYER_TYPE_OTHER),
        fee=_fee(value.total, cash=value.cash),
        payment_method=_METHODS.get(value.payment_method, common_pb2.PAYMENT_METHOD_UNSPECIFIED),
    )
    _set(out, "entry_time", timestamp(value.time))
    return out


# -- reports and patients ---------------------------------------------------------------


def report_summary(value: d.ReportSummary) -> report_pb2.ReportSummary:
    """A report header; archived and not-yet-issued reports say so in ``availability``."""
    if value.archived:
        availability = report_pb2.REPORT_AVAILABILITY_ARCHIVED
    elif value.status == "PENDING":
        availability = report_pb2.REPORT_AVAILABILITY_NOT_READY
    else:
        availability = report_pb2.REPORT_AVAILABILITY_AVAILABLE
    out = report_pb2.ReportSummary(
        report_id=value.report_id,
        type=_REPORT_TYPES.get(value.report_type, report_pb2.REPORT_TYPE_OTHER),
        title=value.title,
        patient=common_pb2.PatientRef(patient_id=value.patient_id),
        status=(
            report_pb2.REPORT_STATUS_FINAL
            if value.status == "FINAL"
            else report_pb2.REPORT_STATUS_REGISTERED
        ),
        availability=availability,
        appointment_id=value.appointment_id,
        department_id=value.department_id,
        has_abnormal=value.abnormal,
    )
    _set(out, "issue_time", timestamp(value.issued_at))
    _set(out, "expected_time", timestamp(value.expected_at))
    return out


def _observation(value: d.Observation) -> report_pb2.Observation:
    out = report_pb2.Observation(
        code=value.code,
        code_system="local",
        name=value.name,
        abbreviation=value.abbreviation,
        unit=value.unit,
        reference_range=report_pb2.ReferenceRange(
            text=value.range_text,
            low=decimal_pb2.Decimal(value=value.low) if value.low else None,
            high=decimal_pb2.Decimal(value=value.high) if value.high else None,
        ),
        interpretation=_FLAGS.get(value.flag, report_pb2.INTERPRETATION_UNSPECIFIED),
        display_order=value.order,
    )
    try:
        float(value.value)
    except ValueError:
        out.text = value.value
    else:
        out.quantity.value = value.value
    return out


def report(value: d.Report, summary: report_pb2.ReportSummary) -> report_pb2.Report:
    """A full report with its content."""
    out = report_pb2.Report(
        summary=summary,
        patient_name=value.patient_name,
        clinical_diagnosis=value.diagnosis,
        reporter_name=value.reporter,
        verifier_name=value.verifier,
    )
    if value.lab is not None:
        lab = report_pb2.LabResult(
            specimen_type=value.lab.specimen,
            observations=[_observation(o) for o in value.lab.observations],
        )
        _set(lab, "collect_time", timestamp(value.lab.collected_at))
        out.lab.CopyFrom(lab)
    elif value.imaging is not None:
        out.imaging.CopyFrom(
            report_pb2.ImagingResult(
                modality=value.imaging.modality,
                body_site=value.imaging.body_part,
                method=value.imaging.method,
                findings=value.imaging.findings,
                conclusion=value.imaging.conclusion,
                study_instance_uid=value.imaging.study_uid,
            )
        )
    return out


def patient(value: d.Patient) -> patient_pb2.Patient:
    """A patient record (PII fields travel, they are never logged)."""
    cards: Sequence[d.PatientCard] = value.cards or (
        (d.PatientCard("HOSPITAL", value.card_number),) if value.card_number else ()
    )
    out = patient_pb2.Patient(
        patient_id=value.patient_id,
        name=value.name,
        gender=_GENDERS.get(value.gender, common_pb2.GENDER_UNSPECIFIED),
        id_card_type=_ID_TYPES.get(value.id_type, common_pb2.ID_CARD_TYPE_UNSPECIFIED),
        id_card_number=value.id_number,
        phone_number=value.phone,
        address=value.address,
        ethnicity=value.ethnicity,
        cards=[
            patient_pb2.PatientCard(
                type=_CARDS.get(c.card_type, common_pb2.CARD_TYPE_OTHER),
                number=c.card_number,
                active=True,
            )
            for c in cards
        ],
        payer_type=PAYERS.get(value.payer, common_pb2.PAYER_TYPE_OTHER),
        insurance_number=value.insurance_number,
    )
    _set(out, "birth_date", date(value.birth_date))
    return out
