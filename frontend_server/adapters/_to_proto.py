"""The obvious domain -> ``hplus.hospital.v1`` conversions, for the servicer layer.

Only what the adapters know is filled in; fields the edge adds itself (versions, campus,
channel, operation records) are left to the servicers. Reports are not converted here yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TypeVar

from google.protobuf import timestamp_pb2
from google.type import date_pb2, interval_pb2, money_pb2, timeofday_pb2

from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    Charge,
    Department,
    Doctor,
    LedgerEntry,
    Money,
    Patient,
    Payment,
    Refund,
    Schedule,
    Slot,
)
from hplus.hospital.v1 import (
    appointment_pb2,
    billing_pb2,
    common_pb2,
    directory_pb2,
    patient_pb2,
)

__all__ = [
    "appointment_to_proto",
    "bill_to_proto",
    "charge_to_proto",
    "department_to_proto",
    "doctor_to_proto",
    "ledger_entry_to_proto",
    "money_from_proto",
    "money_to_proto",
    "patient_to_proto",
    "payment_from_proto",
    "payment_to_proto",
    "refund_to_proto",
    "schedule_to_proto",
    "slot_to_proto",
]

_TITLE = {
    "CHIEF": directory_pb2.DOCTOR_TITLE_CHIEF_PHYSICIAN,
    "ASSOCIATE_CHIEF": directory_pb2.DOCTOR_TITLE_ASSOCIATE_CHIEF_PHYSICIAN,
    "ATTENDING": directory_pb2.DOCTOR_TITLE_ATTENDING_PHYSICIAN,
    "RESIDENT": directory_pb2.DOCTOR_TITLE_RESIDENT_PHYSICIAN,
    "OTHER": directory_pb2.DOCTOR_TITLE_OTHER,
}
_GENDER = {
    "M": common_pb2.GENDER_MALE,
    "F": common_pb2.GENDER_FEMALE,
    "U": common_pb2.GENDER_UNKNOWN,
}
_PERIOD = {
    "AM": common_pb2.SESSION_PERIOD_MORNING,
    "PM": common_pb2.SESSION_PERIOD_AFTERNOON,
    "EVE": common_pb2.SESSION_PERIOD_EVENING,
}
_CLINIC = {
    "GENERAL": directory_pb2.CLINIC_TYPE_GENERAL,
    "EXPERT": directory_pb2.CLINIC_TYPE_EXPERT,
    "RENOWNED": directory_pb2.CLINIC_TYPE_RENOWNED_EXPERT,
}
_SLOT_MODE = {
    "UNLIMITED": directory_pb2.SLOT_MODE_UNLIMITED,
    "SESSION": directory_pb2.SLOT_MODE_SESSION,
    "TIMED": directory_pb2.SLOT_MODE_TIMED,
    "NUMBERED": directory_pb2.SLOT_MODE_NUMBERED,
}
_SLOT_STATUS = {
    "FREE": directory_pb2.SLOT_STATUS_FREE,
    "FULL": directory_pb2.SLOT_STATUS_BUSY,
    "HELD": directory_pb2.SLOT_STATUS_BUSY_TENTATIVE,
    "UNAVAILABLE": directory_pb2.SLOT_STATUS_BUSY_UNAVAILABLE,
}
_APPT_STATUS = {
    "HELD": appointment_pb2.APPOINTMENT_STATUS_HELD,
    "BOOKED": appointment_pb2.APPOINTMENT_STATUS_BOOKED,
    "CANCELLED": appointment_pb2.APPOINTMENT_STATUS_CANCELLED,
    "RELEASED": appointment_pb2.APPOINTMENT_STATUS_HOLD_RELEASED,
}
_PAYER = {
    "SELF": common_pb2.PAYER_TYPE_SELF_PAY,
    "EMPLOYEE": common_pb2.PAYER_TYPE_EMPLOYEE_INSURANCE,
    "RESIDENT": common_pb2.PAYER_TYPE_RESIDENT_INSURANCE,
    "PUBLIC": common_pb2.PAYER_TYPE_PUBLIC_FUNDED,
}
_METHOD = {
    "WECHAT": common_pb2.PAYMENT_METHOD_WECHAT_PAY,
    "ALIPAY": common_pb2.PAYMENT_METHOD_ALIPAY,
    "UNIONPAY": common_pb2.PAYMENT_METHOD_UNIONPAY,
    "HOSPITAL": common_pb2.PAYMENT_METHOD_PAY_AT_HOSPITAL,
}
_ID_TYPE = {
    "RESIDENT": common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
    "PASSPORT": common_pb2.ID_CARD_TYPE_PASSPORT,
    "OTHER": common_pb2.ID_CARD_TYPE_OTHER,
}
_CARD = {
    "HOSPITAL": common_pb2.CARD_TYPE_HOSPITAL_CARD,
    "SOCIAL": common_pb2.CARD_TYPE_SOCIAL_SECURITY_CARD,
    "HEALTH": common_pb2.CARD_TYPE_ELECTRONIC_HEALTH_CARD,
    "OTHER": common_pb2.CARD_TYPE_OTHER,
}
_CHARGE_STATUS = {
    "SETTLED": billing_pb2.CHARGE_STATUS_SETTLED,
    "PARTIALLY_REFUNDED": billing_pb2.CHARGE_STATUS_PARTIALLY_REFUNDED,
    "REFUNDED": billing_pb2.CHARGE_STATUS_REFUNDED,
}
_REFUND_STATUS = {
    "SUCCESS": billing_pb2.REFUND_STATUS_SUCCEEDED,
    "PENDING": billing_pb2.REFUND_STATUS_PENDING_APPROVAL,
    "FAILED": billing_pb2.REFUND_STATUS_REJECTED,
}
_LEDGER_KIND = {
    "REGISTRATION": billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION,
    "REGISTRATION_REFUND": billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION_REFUND,
    "CHARGE": billing_pb2.LEDGER_ENTRY_KIND_CHARGE,
    "CHARGE_REFUND": billing_pb2.LEDGER_ENTRY_KIND_CHARGE_REFUND,
}


_T = TypeVar("_T")


def _enum(table: Mapping[str, _T], value: str, default: _T) -> _T:
    return table.get(value, default)


def money_to_proto(money: Money) -> money_pb2.Money:
    """Fen -> ``google.type.Money`` (units and nanos share the sign).

    Args:
        money: The amount.

    Returns:
        The message.
    """
    sign = -1 if money.fen < 0 else 1
    units, fen = divmod(abs(money.fen), 100)
    return money_pb2.Money(
        currency_code=money.currency, units=sign * units, nanos=sign * fen * 10_000_000
    )


def money_from_proto(money: money_pb2.Money) -> Money:
    """``google.type.Money`` -> fen.

    Args:
        money: The message.

    Returns:
        The amount.

    Raises:
        ValueError: The amount has a fraction of a fen.
    """
    fen, rest = divmod(money.units * 1_000_000_000 + money.nanos, 10_000_000)
    if rest:
        raise ValueError(f"money: {money.nanos} nanos is not a whole number of fen")
    return Money(fen, money.currency_code or "CNY")


def _ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _date(value: dt.date | None) -> date_pb2.Date | None:
    if value is None:
        return None
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _time(value: dt.time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=value.hour, minutes=value.minute, seconds=value.second)


def department_to_proto(d: Department) -> directory_pb2.Department:
    """Converts a department.

    Args:
        d: The department.

    Returns:
        The message.
    """
    return directory_pb2.Department(
        department_id=d.department_id,
        name=d.name,
        parent_department_id=d.parent_id,
        standard_subject_code=d.subject_code,
        location=d.location,
        description=d.description,
        bookable=d.bookable,
        display_order=d.sort_order,
        update_time=_ts(d.modified_at),
    )


def doctor_to_proto(d: Doctor) -> directory_pb2.Doctor:
    """Converts a doctor.

    Args:
        d: The doctor.

    Returns:
        The message.
    """
    return directory_pb2.Doctor(
        doctor_id=d.doctor_id,
        name=d.name,
        title=_enum(_TITLE, d.title, directory_pb2.DOCTOR_TITLE_UNSPECIFIED),
        title_text=d.title_text,
        department_ids=list(d.department_ids),
        gender=_enum(_GENDER, d.gender, common_pb2.GENDER_UNSPECIFIED),
        specialty=d.specialty,
        introduction=d.introduction,
        photo_url=d.photo_url,
        bookable=d.bookable,
        update_time=_ts(d.modified_at),
    )


def schedule_to_proto(s: Schedule) -> directory_pb2.Schedule:
    """Converts a schedule; the status is SUSPENDED, FULL or OPEN (CLOSED needs a clock).

    Args:
        s: The schedule.

    Returns:
        The message.
    """
    if s.suspended:
        status = directory_pb2.SCHEDULE_STATUS_SUSPENDED
    elif s.remaining <= 0 and s.slot_mode != "UNLIMITED":
        status = directory_pb2.SCHEDULE_STATUS_FULL
    else:
        status = directory_pb2.SCHEDULE_STATUS_OPEN
    return directory_pb2.Schedule(
        schedule_id=s.schedule_id,
        department_id=s.department_id,
        doctor_id=s.doctor_id,
        clinic_type=_enum(_CLINIC, s.clinic_type, directory_pb2.CLINIC_TYPE_UNSPECIFIED),
        date=_date(s.visit_date),
        period=_enum(_PERIOD, s.period, common_pb2.SESSION_PERIOD_UNSPECIFIED),
        start_time=_time(s.start),
        end_time=_time(s.end),
        location=s.location,
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(s.total_fee),
            items=[
                common_pb2.FeeItem(
                    code="REGISTRATION", name="挂号费", amount=money_to_proto(s.registration_fee)
                ),
                common_pb2.FeeItem(
                    code="DIAGNOSIS", name="诊查费", amount=money_to_proto(s.diagnosis_fee)
                ),
            ],
        ),
        status=status,
        slot_mode=_enum(_SLOT_MODE, s.slot_mode, directory_pb2.SLOT_MODE_UNSPECIFIED),
        capacity=s.capacity,
        remaining=s.remaining,
        booking_deadline=_ts(s.booking_deadline),
        cancel_deadline=_ts(s.cancel_deadline),
        suspend_reason=s.suspend_reason,
        update_time=_ts(s.modified_at),
        min_patient_age=s.min_age,
        max_patient_age=s.max_age,
        required_gender=_enum(_GENDER, s.required_gender, common_pb2.GENDER_UNSPECIFIED),
    )


def slot_to_proto(s: Slot) -> directory_pb2.Slot:
    """Converts a slot.

    Args:
        s: The slot.

    Returns:
        The message.
    """
    return directory_pb2.Slot(
        slot_id=s.slot_id,
        schedule_id=s.schedule_id,
        start_time=_ts(s.start),
        end_time=_ts(s.end),
        status=_enum(_SLOT_STATUS, s.status, directory_pb2.SLOT_STATUS_UNSPECIFIED),
        capacity=s.capacity,
        remaining=s.remaining,
        ticket_number=s.ticket_number,
        update_time=_ts(s.modified_at),
    )


def payment_to_proto(p: Payment) -> common_pb2.Payment:
    """Converts a payment.

    Args:
        p: The payment.

    Returns:
        The message.
    """
    return common_pb2.Payment(
        method=_enum(_METHOD, p.method, common_pb2.PAYMENT_METHOD_UNSPECIFIED),
        transaction_id=p.transaction_id,
        merchant_order_id=p.merchant_order_id,
        amount=money_to_proto(p.amount),
        paid_time=_ts(p.paid_at),
    )


def payment_from_proto(p: common_pb2.Payment) -> Payment:
    """Converts a payment from a request.

    Args:
        p: The message.

    Returns:
        The payment.

    Raises:
        ValueError: An unsupported method or amount.
    """
    methods = {v: k for k, v in _METHOD.items()}
    if p.method not in methods:
        raise ValueError(f"payment.method: unsupported {common_pb2.PaymentMethod.Name(p.method)}")
    return Payment(
        method=methods[p.method],
        amount=money_from_proto(p.amount),
        transaction_id=p.transaction_id,
        merchant_order_id=p.merchant_order_id,
        paid_at=p.paid_time.ToDatetime(dt.UTC) if p.HasField("paid_time") else None,
    )


def appointment_to_proto(a: Appointment) -> appointment_pb2.Appointment:
    """Converts an appointment.

    Args:
        a: The appointment.

    Returns:
        The message.
    """
    window = None
    if a.visit_start is not None and a.visit_end is not None:
        window = interval_pb2.Interval(start_time=_ts(a.visit_start), end_time=_ts(a.visit_end))
    cancellation = None
    if a.status == "CANCELLED":
        cancellation = appointment_pb2.Cancellation(
            cancel_time=_ts(a.cancelled_at), refund_receipt_number=a.refund_receipt_number
        )
    return appointment_pb2.Appointment(
        appointment_id=a.appointment_id,
        hold_id=a.hold_id,
        status=_enum(_APPT_STATUS, a.status, appointment_pb2.APPOINTMENT_STATUS_UNSPECIFIED),
        patient=common_pb2.PatientRef(patient_id=a.patient_id),
        department_id=a.department_id,
        doctor_id=a.doctor_id,
        schedule_id=a.schedule_id,
        slot_id=a.slot_id,
        visit_date=_date(a.visit_date),
        visit_window=window,
        ticket_number=a.ticket_number,
        location=a.location,
        payer_type=_enum(_PAYER, a.payer, common_pb2.PAYER_TYPE_UNSPECIFIED),
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(a.fee_total),
            insurance_fund_amount=money_to_proto(a.fee_insurance),
            cash_amount=money_to_proto(a.fee_cash),
        ),
        receipt_number=a.receipt_number,
        hold_expire_time=_ts(a.hold_expires_at),
        cancel_deadline=_ts(a.cancel_deadline),
        cancellation=cancellation,
        booking_idempotency_key=a.idempotency_key,
    )


def bill_to_proto(b: Bill) -> billing_pb2.PayableBill:
    """Converts an unpaid bill.

    Args:
        b: The bill.

    Returns:
        The message.
    """
    return billing_pb2.PayableBill(
        bill_id=b.bill_id,
        appointment_id=b.appointment_id,
        department_id=b.department_id,
        doctor_id=b.doctor_id,
        title=b.title,
        order_time=_ts(b.ordered_at),
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(b.total),
            items=[
                common_pb2.FeeItem(
                    code=i.code,
                    name=i.name,
                    category=i.category,
                    unit=i.unit,
                    unit_price=money_to_proto(i.unit_price),
                    amount=money_to_proto(i.amount),
                )
                for i in b.items
            ],
        ),
    )


def charge_to_proto(c: Charge) -> billing_pb2.Charge:
    """Converts a charge.

    Args:
        c: The charge.

    Returns:
        The message.
    """
    return billing_pb2.Charge(
        charge_id=c.charge_id,
        patient=common_pb2.PatientRef(patient_id=c.patient_id),
        bill_ids=list(c.bill_ids),
        payer_type=_enum(_PAYER, c.payer, common_pb2.PAYER_TYPE_UNSPECIFIED),
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(c.total),
            insurance_fund_amount=money_to_proto(c.fund),
            personal_account_amount=money_to_proto(c.account),
            cash_amount=money_to_proto(c.cash),
        ),
        payment=common_pb2.Payment(
            method=_enum(_METHOD, c.payment_method, common_pb2.PAYMENT_METHOD_UNSPECIFIED),
            transaction_id=c.transaction_id,
            amount=money_to_proto(c.cash),
        ),
        status=_enum(_CHARGE_STATUS, c.status, billing_pb2.CHARGE_STATUS_UNSPECIFIED),
        refunded_amount=money_to_proto(c.refunded),
        invoice_number=c.invoice_number,
        guidance=c.guidance,
        settle_time=_ts(c.settled_at),
        idempotency_key=c.idempotency_key,
    )


def refund_to_proto(r: Refund) -> billing_pb2.Refund:
    """Converts a refund.

    Args:
        r: The refund.

    Returns:
        The message.
    """
    return billing_pb2.Refund(
        refund_id=r.refund_id,
        charge_id=r.charge_id,
        status=_enum(_REFUND_STATUS, r.status, billing_pb2.REFUND_STATUS_UNSPECIFIED),
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(r.total), cash_amount=money_to_proto(r.amount)
        ),
        create_time=_ts(r.requested_at),
        complete_time=_ts(r.finished_at),
        idempotency_key=r.idempotency_key,
    )


def ledger_entry_to_proto(e: LedgerEntry) -> billing_pb2.LedgerEntry:
    """Converts a ledger line.

    Args:
        e: The line.

    Returns:
        The message.
    """
    return billing_pb2.LedgerEntry(
        kind=_enum(_LEDGER_KIND, e.kind, billing_pb2.LEDGER_ENTRY_KIND_UNSPECIFIED),
        receipt_number=e.receipt_number,
        transaction_id=e.transaction_id,
        appointment_id=e.appointment_id,
        patient=common_pb2.PatientRef(patient_id=e.patient_id),
        payer_type=_enum(_PAYER, e.payer, common_pb2.PAYER_TYPE_UNSPECIFIED),
        fee=common_pb2.FeeSummary(
            total_amount=money_to_proto(e.total), cash_amount=money_to_proto(e.cash)
        ),
        payment_method=_enum(_METHOD, e.payment_method, common_pb2.PAYMENT_METHOD_UNSPECIFIED),
        entry_time=_ts(e.time),
    )


def patient_to_proto(p: Patient) -> patient_pb2.Patient:
    """Converts a patient (the message's identifying fields are marked PII in the proto).

    Args:
        p: The patient.

    Returns:
        The message.
    """
    cards = (
        [
            patient_pb2.PatientCard(
                type=common_pb2.CARD_TYPE_HOSPITAL_CARD, number=p.card_number, active=True
            )
        ]
        if p.card_number
        else []
    )
    cards += [
        patient_pb2.PatientCard(
            type=_enum(_CARD, c.card_type, common_pb2.CARD_TYPE_OTHER),
            number=c.card_number,
            active=True,
        )
        for c in p.cards
        if c.card_number != p.card_number
    ]
    return patient_pb2.Patient(
        patient_id=p.patient_id,
        name=p.name,
        gender=_enum(_GENDER, p.gender, common_pb2.GENDER_UNSPECIFIED),
        birth_date=_date(p.birth_date),
        id_card_type=_enum(_ID_TYPE, p.id_type, common_pb2.ID_CARD_TYPE_UNSPECIFIED),
        id_card_number=p.id_number,
        phone_number=p.phone,
        address=p.address,
        ethnicity=p.ethnicity,
        cards=cards,
        payer_type=_enum(_PAYER, p.payer, common_pb2.PAYER_TYPE_UNSPECIFIED),
        insurance_number=p.insurance_number,
    )
