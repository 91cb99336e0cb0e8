"""One contract, three dialects: every scenario runs against the REST, SOAP and DB simulators.

Expected outcomes are the same for every dialect except where a dialect lacks a capability,
which the adapter then states (``capabilities``) and enforces (``HisCapabilityError``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from frontend_server.adapters import (
    HisAdapter,
    HisCapabilityError,
    HisRejected,
    Money,
    PatientRegistration,
    Payment,
    RejectReason,
    make_adapter,
)
from tests.unit.frontend_server.adapters.helpers import mirror, settings_for
from tools.his_sim import ArchiveReport, SimBase, id_card_check_digit

PATIENT = "P00000010"  # an adult of seed 7 with unpaid bills and reports

QUERY_BY_KEY = {"rest": True, "soap": True, "db": False}
INCREMENTAL = {"rest": True, "soap": False, "db": True}


# --------------------------------------------------------------------------- directory


async def test_lists_departments_doctors_schedules_and_slots(
    his: SimBase, adapter: HisAdapter
) -> None:
    departments = await adapter.list_departments()
    assert {d.department_id: d.name for d in departments} == {
        d.dept_id: d.name for d in his.core.list_departments()
    }
    by_id = {d.department_id: d for d in departments}
    assert by_id["0101"].parent_id == "0100"
    assert not by_id["0100"].bookable

    doctors = await adapter.list_doctors(department_id="0101")
    expected = {d.doctor_id: d for d in his.core.list_doctors("0101")}
    assert {d.doctor_id for d in doctors} == set(expected)
    for doc in doctors:
        assert "0101" in doc.department_ids
        assert doc.title == expected[doc.doctor_id].title
        assert doc.name == expected[doc.doctor_id].name

    start = his.core.today + dt.timedelta(days=1)
    schedules = await adapter.list_schedules(department_id="0101", start=start, end=start)
    core_schedules = his.core.list_schedules(dept_id="0101", start=start, end=start)
    assert {s.schedule_id for s in schedules} == {s.schedule_id for s in core_schedules}
    assert schedules
    for s in schedules:
        assert s.visit_date == start
        assert s.total_fee.fen == s.registration_fee.fen + s.diagnosis_fee.fen
        assert s.total_fee.currency == "CNY"
        assert s.period in ("AM", "PM", "EVE")
        # Explicit in REST/SOAP, derived from the session times for the DB dialect.
        zone = s.booking_deadline.tzinfo if s.booking_deadline else None
        assert s.booking_deadline == dt.datetime.combine(s.visit_date, s.end, zone)
        assert s.cancel_deadline == dt.datetime.combine(s.visit_date, s.start, zone)
        core_s = his.core.schedules[s.schedule_id]
        assert s.cancel_deadline == core_s.start_at
        assert s.booking_deadline == core_s.end_at

    schedule = schedules[0]
    slots = await adapter.list_slots(schedule.schedule_id)
    assert [s.slot_id for s in slots] == [
        s.slot_id for s in his.core.slots_of(schedule.schedule_id)
    ]
    assert all(s.start.utcoffset() == dt.timedelta(hours=8) for s in slots)
    assert all(s.status in ("FREE", "FULL", "HELD", "UNAVAILABLE") for s in slots)


async def test_bulk_slots_of_a_date_range_equal_the_per_schedule_listing(
    his: SimBase, adapter: HisAdapter
) -> None:
    assert adapter.capabilities.bulk_slots
    start = his.core.today + dt.timedelta(days=1)
    end = start + dt.timedelta(days=1)
    bulk = await adapter.list_slots_between(start=start, end=end)
    per_schedule = []
    for schedule in await adapter.list_schedules(start=start, end=end):
        per_schedule.extend(await adapter.list_slots(schedule.schedule_id))
    assert bulk
    assert sorted(bulk, key=lambda s: s.slot_id) == sorted(per_schedule, key=lambda s: s.slot_id)
    everything = await adapter.list_slots_between(start=his.core.today)
    assert {s.slot_id for s in everything} == set(his.core.slots)
    settings = dataclasses.replace(
        settings_for(his), disabled_capabilities=frozenset({"bulk_slots"})
    )
    async with make_adapter(settings) as limited:
        with pytest.raises(HisCapabilityError) as info:
            await limited.list_slots_between(start=start)
        assert info.value.capability == "bulk_slots"


async def test_changes_since_a_watermark_or_capability_error(
    his: SimBase, adapter: HisAdapter
) -> None:
    assert adapter.capabilities.incremental_changes is INCREMENTAL[his.dialect]
    if not INCREMENTAL[his.dialect]:
        with pytest.raises(HisCapabilityError) as info:
            await adapter.get_changes()
        assert info.value.capability == "incremental_changes"
        return
    everything = await adapter.get_changes()
    assert len(everything.departments) == len(his.core.departments)
    assert len(everything.schedules) == len(his.core.schedules)
    assert everything.watermark

    quiet = await adapter.get_changes(everything.watermark)
    assert quiet.schedules == ()

    target = sorted(his.core.schedules)[3]
    his.core.suspend_schedule(target, "医生临时停诊")
    await mirror(his)
    changed = await adapter.get_changes(everything.watermark)
    assert [s.schedule_id for s in changed.schedules] == [target]
    assert changed.schedules[0].suspended
    assert changed.watermark > everything.watermark


# --------------------------------------------------------------------------- appointments


async def test_hold_book_cancel(his: SimBase, adapter: HisAdapter) -> None:
    slot = his.core.bookable_slot(patient_id=PATIENT)

    held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="order-1:hold")
    assert held.status == "HELD"
    assert held.hold_id
    assert held.appointment_id == ""
    assert held.slot_id == slot.slot_id
    assert held.hold_expires_at is not None
    assert his.core.counts().holds == 1

    payment = Payment("WECHAT", held.fee_cash, transaction_id="wx-1")
    booked = await adapter.book(
        patient_id=PATIENT, key="order-1:book", hold_id=held.hold_id, payment=payment
    )
    assert booked.status == "BOOKED"
    assert booked.appointment_id
    assert booked.hold_id == held.hold_id
    assert booked.receipt_number
    assert booked.visit_start is not None
    assert booked.visit_start.date() == booked.visit_date
    counts = his.core.counts()
    assert (counts.holds, counts.bookings) == (0, 1)

    fetched = await adapter.get_appointment(booked.appointment_id)
    assert (fetched.appointment_id, fetched.status) == (booked.appointment_id, "BOOKED")
    listed = await adapter.list_appointments(PATIENT)
    assert [a.appointment_id for a in listed if a.status == "BOOKED"] == [booked.appointment_id]

    cancelled = await adapter.cancel(
        appointment_id=booked.appointment_id, patient_id=PATIENT, key="order-1:cancel"
    )
    assert cancelled.status == "CANCELLED"
    assert cancelled.refund_receipt_number
    counts = his.core.counts()
    assert (counts.bookings, counts.cancellations) == (0, 1)


async def test_release_hold_and_booking_refusals(his: SimBase, adapter: HisAdapter) -> None:
    slot = his.core.bookable_slot(patient_id=PATIENT)
    held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="o2:hold")

    # The real-name rule: one hold per patient per doctor per day.
    other = (
        next(
            s
            for s in his.core.slots_of(slot.schedule_id)
            if s.slot_id != slot.slot_id and his.core.slot_state(s).status == "FREE"
        )
        if len(his.core.slots_of(slot.schedule_id)) > 1
        else slot
    )
    with pytest.raises(HisRejected) as info:
        await adapter.hold(slot_id=other.slot_id, patient_id=PATIENT, key="o3:hold")
    assert info.value.reason is RejectReason.BOOKING_RULE_VIOLATED
    assert info.value.vendor_code

    released = await adapter.release_hold(held.hold_id)
    assert released.status == "RELEASED"
    assert his.core.counts().holds == 0

    with pytest.raises(HisRejected) as info:
        await adapter.book(patient_id=PATIENT, key="o2:book", hold_id=held.hold_id)
    assert info.value.reason is RejectReason.HOLD_EXPIRED
    assert his.core.counts().bookings == 0

    held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="o4:hold")
    wrong = Payment("ALIPAY", Money(held.fee_cash.fen + 1), transaction_id="ali-1")
    with pytest.raises(HisRejected) as info:
        await adapter.book(patient_id=PATIENT, key="o4:book", hold_id=held.hold_id, payment=wrong)
    assert info.value.reason is RejectReason.AMOUNT_MISMATCH
    # Vendor texts stay out of str(exc): they may quote patient data.
    assert info.value.vendor_message not in str(info.value)


# --------------------------------------------------------------------------- billing


async def test_quote_settle_refund_and_ledger(his: SimBase, adapter: HisAdapter) -> None:
    bills = await adapter.list_bills(PATIENT)
    assert {b.bill_id for b in bills} == {b.bill_id for b in his.core.unpaid_bills(PATIENT)}
    bill = bills[0]
    assert bill.items
    assert sum(i.amount.fen for i in bill.items) == bill.total.fen

    quote = await adapter.quote(patient_id=PATIENT, bill_ids=[bill.bill_id])
    assert quote.total == bill.total
    assert quote.fund.fen + quote.account.fen + quote.cash.fen == quote.total.fen

    with pytest.raises(HisRejected) as info:
        await adapter.settle(
            patient_id=PATIENT,
            bill_ids=[bill.bill_id],
            payment=Payment("WECHAT", Money(quote.cash.fen + 100), transaction_id="wx-9"),
            key="pay-0",
        )
    assert info.value.reason is RejectReason.AMOUNT_MISMATCH

    charge = await adapter.settle(
        patient_id=PATIENT,
        bill_ids=[bill.bill_id],
        payment=Payment("WECHAT", quote.cash, transaction_id="wx-2"),
        key="pay-1",
    )
    assert charge.status == "SETTLED"
    assert charge.bill_ids == (bill.bill_id,)
    assert charge.cash == quote.cash
    assert charge.payment_method == "WECHAT"
    assert len(his.core.charges_of(PATIENT)) == 1

    partial = await adapter.refund(charge_id=charge.charge_id, key="refund-1", amount=Money(100))
    assert partial.amount == Money(100)
    assert partial.status == "SUCCESS"
    assert (await adapter.get_charge(charge.charge_id)).status == "PARTIALLY_REFUNDED"
    assert (await adapter.get_refund(partial.refund_id)).amount == Money(100)

    with pytest.raises(HisRejected) as info:
        await adapter.refund(charge_id=charge.charge_id, key="refund-2", amount=charge.cash)
    assert info.value.reason is RejectReason.INSUFFICIENT_AMOUNT

    rest = await adapter.refund(charge_id=charge.charge_id, key="refund-3")
    assert rest.amount.fen == charge.cash.fen - 100
    final = await adapter.get_charge(charge.charge_id)
    assert (final.status, final.refunded) == ("REFUNDED", charge.cash)

    ledger = await adapter.daily_ledger(
        charge.settled_at.date() if charge.settled_at else his.core.today
    )
    kinds = {(e.kind, e.receipt_number) for e in ledger.entries}
    assert ("CHARGE", charge.charge_id) in kinds
    assert ("CHARGE_REFUND", partial.refund_id) in kinds
    assert ledger.closed is False
    assert (await adapter.daily_ledger(his.core.today - dt.timedelta(days=3))).closed


async def test_query_by_key_or_capability_error(his: SimBase, adapter: HisAdapter) -> None:
    caps = adapter.capabilities
    expected = QUERY_BY_KEY[his.dialect]
    assert (caps.appointment_query_by_key, caps.charge_query_by_key) == (expected, expected)
    slot = his.core.bookable_slot(patient_id=PATIENT)
    booked = await adapter.book(patient_id=PATIENT, key="k-book", slot_id=slot.slot_id)
    bill = (await adapter.list_bills(PATIENT))[0]
    quote = await adapter.quote(patient_id=PATIENT, bill_ids=[bill.bill_id])
    charge = await adapter.settle(
        patient_id=PATIENT,
        bill_ids=[bill.bill_id],
        payment=Payment("ALIPAY", quote.cash, transaction_id="ali-7"),
        key="k-settle",
    )
    refund = await adapter.refund(charge_id=charge.charge_id, key="k-refund")
    if not expected:
        for call in (
            adapter.find_appointment_by_key("k-book"),
            adapter.find_charge_by_key("k-settle"),
            adapter.find_refund_by_key("k-refund"),
        ):
            with pytest.raises(HisCapabilityError):
                await call
        return
    found = await adapter.find_appointment_by_key("k-book")
    assert found is not None
    assert found.appointment_id == booked.appointment_id
    assert found.idempotency_key == "k-book"
    found_charge = await adapter.find_charge_by_key("k-settle")
    assert found_charge is not None
    assert found_charge.charge_id == charge.charge_id
    found_refund = await adapter.find_refund_by_key("k-refund")
    assert found_refund is not None
    assert found_refund.refund_id == refund.refund_id
    assert await adapter.find_appointment_by_key("never-used") is None
    assert await adapter.find_charge_by_key("never-used") is None
    assert await adapter.find_refund_by_key("never-used") is None


# --------------------------------------------------------------------------- reports


def _report_of(his: SimBase, *, archived: bool) -> tuple[str, str]:
    for report in sorted(his.core.reports.values(), key=lambda r: r.report_id):
        if report.status == "FINAL" and report.archived is archived:
            return report.report_id, report.patient_id
    raise AssertionError("seed has no such report")


async def test_reports_including_archived(his: SimBase, adapter: HisAdapter) -> None:
    report_id, patient_id = _report_of(his, archived=False)
    listed = {r.report_id: r for r in await adapter.list_reports(patient_id)}
    assert set(listed) == {r.report_id for r in his.core.patient_reports(patient_id)}
    assert not listed[report_id].archived

    report = await adapter.get_report(report_id, patient_id=patient_id)
    core = his.core.reports[report_id]
    assert report.report_type == ("LAB" if core.kind == "LAB" else "IMAGING")
    if core.lab is not None:
        assert report.lab is not None
        assert report.imaging is None
        assert [o.code for o in report.lab.observations] == [o.code for o in core.lab.observations]
    else:
        assert report.imaging is not None
        assert report.lab is None
        assert core.imaging is not None
        assert report.imaging.conclusion == core.imaging.conclusion

    await his.inject(ArchiveReport(report_id, after_seconds=0))
    await mirror(his)
    listed = {r.report_id: r for r in await adapter.list_reports(patient_id)}
    assert listed[report_id].archived
    with pytest.raises(HisRejected) as info:
        await adapter.get_report(report_id, patient_id=patient_id)
    assert info.value.reason is RejectReason.REPORT_ARCHIVED
    archived = await adapter.get_archived_report(report_id, patient_id=patient_id)
    assert dataclasses.replace(archived, patient_name="") == dataclasses.replace(
        report, patient_name=""
    )


# --------------------------------------------------------------------------- patients


def _new_id_card(serial: str = "123") -> str:
    first17 = "110101" + "19900307" + serial
    return first17 + id_card_check_digit(first17)


async def test_register_and_find_patient(his: SimBase, adapter: HisAdapter) -> None:
    before = his.core.counts().patients
    registration = PatientRegistration(
        name="测试患者", id_number=_new_id_card(), phone="13800138000", payer="SELF"
    )
    first = await adapter.register_patient(registration)
    assert first.created
    patient = first.patient
    assert patient.gender == "M"  # the 17th digit of the ID number is odd
    assert patient.birth_date == dt.date(1990, 3, 7)
    assert patient.id_number == registration.id_number
    assert his.core.counts().patients == before + 1

    again = await adapter.register_patient(registration)
    assert not again.created
    assert again.patient.patient_id == patient.patient_id
    assert his.core.counts().patients == before + 1

    by_id = await adapter.find_patients(id_number=registration.id_number)
    assert [p.patient_id for p in by_id] == [patient.patient_id]
    by_phone = await adapter.find_patients(phone="13800138000", name="测试患者")
    assert [p.patient_id for p in by_phone] == [patient.patient_id]
    by_card = await adapter.find_patients(card_number=patient.card_number)
    assert [p.patient_id for p in by_card] == [patient.patient_id]
    with pytest.raises(ValueError, match="exactly one"):
        await adapter.find_patients()

    with pytest.raises(HisRejected) as info:
        await adapter.register_patient(dataclasses.replace(registration, name="别的名字"))
    assert info.value.reason is RejectReason.IDENTITY_MISMATCH

    # Identifiers never show in a record's repr (so logging a record is safe).
    assert registration.id_number not in repr(patient)
    assert "测试患者" not in repr(patient)
    assert "13800138000" not in repr(registration)


async def test_a_refused_parameter_is_named_by_its_contract_field(
    his: SimBase, adapter: HisAdapter
) -> None:
    valid = _new_id_card("456")
    bad_digit = valid[:17] + ("0" if valid[17] != "0" else "1")
    registration = PatientRegistration(name="测试患者", id_number=bad_digit, payer="SELF")
    with pytest.raises(HisRejected) as info:
        await adapter.register_patient(registration)
    assert info.value.reason is RejectReason.INVALID_ARGUMENT
    assert info.value.field == "id_card_number"
    assert bad_digit not in str(info.value)  # the vendor's text stays out of str()
    with pytest.raises(HisRejected) as info:
        await adapter.register_patient(
            dataclasses.replace(registration, id_number=valid, phone="12345")
        )
    assert info.value.field == "phone_number"


async def test_settings_choose_the_adapter(his: SimBase) -> None:
    async with make_adapter(settings_for(his)) as a:
        assert a.dialect == his.dialect
        assert isinstance(a, HisAdapter)
