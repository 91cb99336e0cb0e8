"""Domain -> hplus.hospital.v1 conversions, fed with what each dialect really returns."""

from __future__ import annotations

import datetime as dt

import pytest
from google.type import money_pb2

from frontend_server.adapters import (
    HisAdapter,
    Money,
    PatientRegistration,
    Payment,
    appointment_to_proto,
    bill_to_proto,
    charge_to_proto,
    department_to_proto,
    doctor_to_proto,
    ledger_entry_to_proto,
    money_from_proto,
    money_to_proto,
    patient_to_proto,
    payment_from_proto,
    payment_to_proto,
    refund_to_proto,
    schedule_to_proto,
    slot_to_proto,
)
from hplus.hospital.v1 import appointment_pb2, billing_pb2, common_pb2, directory_pb2
from tools.his_sim import SimBase, id_card_check_digit

PATIENT = "P00000010"


@pytest.mark.parametrize("fen", [0, 1, 99, 100, 4900, 123456, -250])
def test_money_round_trip(fen: int) -> None:
    message = money_to_proto(Money(fen))
    assert message.currency_code == "CNY"
    assert message.units == int(fen / 100)  # units and nanos share the sign
    assert money_from_proto(message) == Money(fen)


def test_money_refuses_fractions_of_a_fen() -> None:
    with pytest.raises(ValueError, match="fen"):
        money_from_proto(money_pb2.Money(currency_code="CNY", units=1, nanos=5))


def test_payment_round_trip() -> None:
    paid = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    payment = Payment("ALIPAY", Money(4900), "tx", "mo", paid)
    message = payment_to_proto(payment)
    assert message.method == common_pb2.PAYMENT_METHOD_ALIPAY
    assert payment_from_proto(message) == payment
    with pytest.raises(ValueError, match=r"payment\.method"):
        payment_from_proto(common_pb2.Payment())


async def test_records_of_every_dialect_convert(his: SimBase, adapter: HisAdapter) -> None:
    departments = [department_to_proto(d) for d in await adapter.list_departments()]
    assert {d.department_id for d in departments} == set(his.core.departments)
    doctors = [doctor_to_proto(d) for d in await adapter.list_doctors()]
    assert all(d.title != directory_pb2.DOCTOR_TITLE_UNSPECIFIED for d in doctors)

    slot = his.core.bookable_slot(patient_id=PATIENT)
    schedule = next(s for s in await adapter.list_schedules() if s.schedule_id == slot.schedule_id)
    sched = schedule_to_proto(schedule)
    assert sched.status == directory_pb2.SCHEDULE_STATUS_OPEN
    assert sched.period != common_pb2.SESSION_PERIOD_UNSPECIFIED
    assert money_from_proto(sched.fee.total_amount) == schedule.total_fee
    assert sched.cancel_deadline.ToDatetime(dt.UTC) == schedule.cancel_deadline
    slots = [slot_to_proto(s) for s in await adapter.list_slots(slot.schedule_id)]
    assert slot.slot_id in {s.slot_id for s in slots}

    booked = await adapter.book(patient_id=PATIENT, key="p-1", slot_id=slot.slot_id)
    appt = appointment_to_proto(booked)
    assert appt.status == appointment_pb2.APPOINTMENT_STATUS_BOOKED
    assert appt.patient.patient_id == PATIENT
    assert appt.visit_window.start_time.ToDatetime(dt.UTC) == booked.visit_start
    cancelled = appointment_to_proto(
        await adapter.cancel(appointment_id=booked.appointment_id, patient_id=PATIENT, key="p-2")
    )
    assert cancelled.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
    assert cancelled.cancellation.refund_receipt_number

    bill = (await adapter.list_bills(PATIENT))[0]
    assert bill_to_proto(bill).fee.items[0].code == bill.items[0].code
    quote = await adapter.quote(patient_id=PATIENT, bill_ids=[bill.bill_id])
    charge = await adapter.settle(
        patient_id=PATIENT,
        bill_ids=[bill.bill_id],
        payment=Payment("WECHAT", quote.cash, "wx-p"),
        key="p-3",
    )
    charge_message = charge_to_proto(charge)
    assert charge_message.status == billing_pb2.CHARGE_STATUS_SETTLED
    assert money_from_proto(charge_message.fee.cash_amount) == quote.cash
    refund = refund_to_proto(await adapter.refund(charge_id=charge.charge_id, key="p-4"))
    assert refund.status == billing_pb2.REFUND_STATUS_SUCCEEDED
    ledger = await adapter.daily_ledger(his.core.now().date())
    kinds = {ledger_entry_to_proto(e).kind for e in ledger.entries}
    assert billing_pb2.LEDGER_ENTRY_KIND_CHARGE_REFUND in kinds

    first17 = "110101" + "20000101" + "002"
    registered = await adapter.register_patient(
        PatientRegistration(name="转换测试", id_number=first17 + id_card_check_digit(first17))
    )
    patient = patient_to_proto(registered.patient)
    assert patient.gender == common_pb2.GENDER_FEMALE
    assert patient.id_card_type == common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
    assert patient.cards[0].number == registered.patient.card_number
