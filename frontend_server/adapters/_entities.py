"""Builds domain records from answer records, driven by a per-dialect field-name map.

Each builder takes a :class:`Record` and a map "domain attribute -> documented vendor field"
(None or absent: the dialect has no such field). The dialects differ only in these maps
and in a few shapes handled here (comma lists, nested payment objects, flat report content).
"""

from __future__ import annotations

import datetime as dt

from frontend_server.adapters._codec import Record
from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    BillItem,
    Charge,
    Department,
    Doctor,
    ImagingResult,
    LabResult,
    LedgerEntry,
    Money,
    Observation,
    Patient,
    PatientCard,
    Quote,
    Refund,
    Report,
    ReportSummary,
    Schedule,
    Slot,
)
from frontend_server.adapters._fieldmaps import Names

__all__ = [
    "Names",
    "appointment",
    "bill",
    "bill_item",
    "charge",
    "department",
    "doctor",
    "ledger_entry",
    "patient",
    "quote",
    "refund",
    "report",
    "report_summary",
    "schedule",
    "slot",
]


def department(r: Record, n: Names) -> Department:
    """Builds a department.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The department.
    """
    return Department(
        department_id=r.text(n["department_id"]),
        name=r.text(n["name"]),
        parent_id=r.text(n.get("parent_id")),
        subject_code=r.text(n.get("subject_code")),
        location=r.text(n.get("location")),
        description=r.text(n.get("description")),
        bookable=r.flag(n.get("bookable")),
        sort_order=r.integer(n.get("sort_order")),
        modified_at=r.datetime(n.get("modified_at")),
    )


def doctor(r: Record, n: Names) -> Doctor:
    """Builds a doctor.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The doctor.
    """
    return Doctor(
        doctor_id=r.text(n["doctor_id"]),
        name=r.text(n["name"]),
        title=r.code(n["title"], "title"),
        title_text=r.text(n.get("title_text")),
        department_ids=r.texts(n["department_ids"]),
        gender=r.code(n.get("gender"), "gender"),
        specialty=r.text(n.get("specialty")),
        introduction=r.text(n.get("introduction")),
        photo_url=r.text(n.get("photo_url")),
        bookable=r.flag(n.get("bookable")),
        modified_at=r.datetime(n.get("modified_at")),
    )


def schedule(r: Record, n: Names) -> Schedule:
    """Builds a schedule; a missing total fee is the sum of its parts.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The schedule.
    """
    reg_fee = r.money(n["registration_fee"])
    diag_fee = r.money(n["diagnosis_fee"])
    total_name = n.get("total_fee")
    total = (
        r.money(total_name) if total_name else Money(reg_fee.fen + diag_fee.fen, reg_fee.currency)
    )
    visit_date = r.date(n["visit_date"])
    if visit_date is None:
        raise r.error(n["visit_date"] or "", "missing date")
    start = r.time(n["start"] or "")
    end = r.time(n["end"] or "")
    # A dialect without explicit deadlines closes booking at the session's end and
    # cancelling at its start (as its vendor documents).
    booking_deadline = (
        r.datetime(n["booking_deadline"])
        if n.get("booking_deadline")
        else dt.datetime.combine(visit_date, end, r.zone)
    )
    cancel_deadline = (
        r.datetime(n["cancel_deadline"])
        if n.get("cancel_deadline")
        else dt.datetime.combine(visit_date, start, r.zone)
    )
    return Schedule(
        schedule_id=r.text(n["schedule_id"]),
        department_id=r.text(n["department_id"]),
        doctor_id=r.text(n["doctor_id"]),
        visit_date=visit_date,
        period=r.code(n["period"], "period"),
        start=start,
        end=end,
        location=r.text(n.get("location")),
        clinic_type=r.code(n["clinic_type"], "clinic_type"),
        registration_fee=reg_fee,
        diagnosis_fee=diag_fee,
        total_fee=total,
        slot_mode=r.code(n["slot_mode"], "slot_mode"),
        capacity=r.integer(n["capacity"]),
        remaining=r.integer(n["remaining"]),
        suspended=r.code(n["status"], "schedule_status") == "SUSPENDED",
        suspend_reason=r.text(n.get("suspend_reason")),
        min_age=r.integer(n.get("min_age")),
        max_age=r.integer(n.get("max_age")),
        required_gender=r.code(n.get("required_gender"), "gender"),
        booking_deadline=booking_deadline,
        cancel_deadline=cancel_deadline,
        modified_at=r.datetime(n.get("modified_at")),
    )


def slot(r: Record, n: Names) -> Slot:
    """Builds a slot.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The slot.
    """
    start = r.datetime(n["start"])
    end = r.datetime(n["end"])
    if start is None or end is None:
        raise r.error(n["start"] or "", "slot without start or end")
    return Slot(
        slot_id=r.text(n["slot_id"]),
        schedule_id=r.text(n["schedule_id"]),
        ticket_number=r.integer(n.get("ticket_number")),
        start=start,
        end=end,
        capacity=r.integer(n["capacity"]),
        remaining=r.integer(n["remaining"]),
        held=r.integer(n.get("held")),
        status=r.code(n["status"], "slot_status"),
        modified_at=r.datetime(n.get("modified_at")),
    )


def _visit_window(
    r: Record, n: Names, visit_date: dt.date | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    window = n.get("visit_window")
    if window is None:
        return r.datetime(n.get("visit_start")), r.datetime(n.get("visit_end"))
    text = r.text(window)
    if not text or visit_date is None:
        return None, None
    try:
        begin, end = (dt.time.fromisoformat(p.strip()) for p in text.split("-", 1))
    except ValueError:
        raise r.error(window, f"{text!r} is not HH:mm-HH:mm") from None
    zone = r.zone
    return (
        dt.datetime.combine(visit_date, begin, zone),
        dt.datetime.combine(visit_date, end, zone),
    )


def appointment(r: Record, n: Names) -> Appointment:
    """Builds an appointment; ``appointment_id`` is "" while it is only a hold.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The appointment.
    """
    status = r.code(n["status"], "appointment_status")
    visit_date = r.date(n["visit_date"])
    start, end = _visit_window(r, n, visit_date)
    appt_id = r.text(n["appointment_id"]) if status in ("BOOKED", "CANCELLED") else ""
    return Appointment(
        hold_id=r.text(n["hold_id"]),
        appointment_id=appt_id,
        status=status,
        patient_id=r.text(n["patient_id"]),
        department_id=r.text(n.get("department_id")),
        doctor_id=r.text(n.get("doctor_id")),
        schedule_id=r.text(n["schedule_id"]),
        slot_id=r.text(n["slot_id"]),
        visit_date=visit_date,
        visit_start=start,
        visit_end=end,
        ticket_number=r.integer(n.get("ticket_number")),
        location=r.text(n.get("location")),
        check_in_code=r.text(n.get("check_in_code")),
        payer=r.code(n["payer"], "payer"),
        fee_total=r.money(n["fee_total"]),
        fee_insurance=r.money(n.get("fee_insurance")),
        fee_cash=r.money(n["fee_cash"]),
        receipt_number=r.text(n.get("receipt_number")),
        hold_expires_at=r.datetime(n.get("hold_expires_at")),
        cancelled_at=r.datetime(n.get("cancelled_at")),
        refund_receipt_number=r.text(n.get("refund_receipt_number")),
        cancel_deadline=r.datetime(n.get("cancel_deadline")),
        idempotency_key=r.text(n.get("idempotency_key")),
    )


def bill_item(r: Record, n: Names) -> BillItem:
    """Builds a bill line.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The line.
    """
    return BillItem(
        code=r.text(n["code"]),
        name=r.text(n["name"]),
        category=r.text(n.get("category")),
        quantity=r.text(n.get("quantity")),
        unit=r.text(n.get("unit")),
        unit_price=r.money(n.get("unit_price")),
        amount=r.money(n["amount"]),
    )


def bill(r: Record, n: Names, item_names: Names, items: tuple[BillItem, ...] | None = None) -> Bill:
    """Builds an unpaid bill.

    Args:
        r: Answer record.
        n: Field names.
        item_names: Field names of its lines.
        items: Lines read elsewhere (a separate view); None to read ``n["items"]``.

    Returns:
        The bill.
    """
    if items is None:
        items = tuple(bill_item(i, item_names) for i in r.items(n["items"] or ""))
    return Bill(
        bill_id=r.text(n["bill_id"]),
        appointment_id=r.text(n.get("appointment_id")),
        department_id=r.text(n.get("department_id")),
        doctor_id=r.text(n.get("doctor_id")),
        title=r.text(n.get("title")),
        ordered_at=r.datetime(n.get("ordered_at")),
        total=r.money(n["total"]),
        items=items,
    )


def quote(r: Record, n: Names) -> Quote:
    """Builds a pre-settlement.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The quote.
    """
    return Quote(
        quote_id=r.text(n["quote_id"]),
        total=r.money(n["total"]),
        fund=r.money(n["fund"]),
        account=r.money(n["account"]),
        cash=r.money(n["cash"]),
        expires_at=r.datetime(n.get("expires_at")),
    )


def charge(r: Record, n: Names) -> Charge:
    """Builds a charge.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The charge.
    """
    return Charge(
        charge_id=r.text(n["charge_id"]),
        patient_id=r.text(n["patient_id"]),
        bill_ids=r.texts(n["bill_ids"]),
        payer=r.code(n["payer"], "payer"),
        total=r.money(n["total"]),
        fund=r.money(n["fund"]),
        account=r.money(n["account"]),
        cash=r.money(n["cash"]),
        payment_method=r.code(n["payment_method"], "payment_method"),
        transaction_id=r.text(n.get("transaction_id")),
        status=r.code(n["status"], "charge_status"),
        refunded=r.money(n["refunded"]),
        invoice_number=r.text(n.get("invoice_number")),
        guidance=r.text(n.get("guidance")),
        settled_at=r.datetime(n.get("settled_at")),
        idempotency_key=r.text(n.get("idempotency_key")),
    )


def refund(r: Record, n: Names) -> Refund:
    """Builds a refund.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The refund.
    """
    return Refund(
        refund_id=r.text(n["refund_id"]),
        charge_id=r.text(n["charge_id"]),
        status=r.code(n["status"], "refund_status"),
        amount=r.money(n["amount"]),
        total=r.money(n.get("total")),
        reason=r.text(n.get("reason")),
        requested_at=r.datetime(n.get("requested_at")),
        finished_at=r.datetime(n.get("finished_at")),
        idempotency_key=r.text(n.get("idempotency_key")),
    )


def ledger_entry(r: Record, n: Names) -> LedgerEntry:
    """Builds a ledger line.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The line.
    """
    return LedgerEntry(
        kind=r.code(n["kind"], "ledger_kind"),
        receipt_number=r.text(n["receipt_number"]),
        patient_id=r.text(n["patient_id"]),
        appointment_id=r.text(n.get("appointment_id")),
        payer=r.code(n["payer"], "payer"),
        total=r.money(n["total"]),
        cash=r.money(n["cash"]),
        payment_method=r.code(n["payment_method"], "payment_method"),
        transaction_id=r.text(n.get("transaction_id")),
        time=r.datetime(n.get("time")),
    )


def report_summary(r: Record, n: Names) -> ReportSummary:
    """Builds a report header as listed.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The summary.
    """
    return ReportSummary(
        report_id=r.text(n["report_id"]),
        report_type=r.code(n["report_type"], "report_type"),
        title=r.text(n["title"]),
        patient_id=r.text(n["patient_id"]),
        status=r.code(n["status"], "report_status"),
        archived=r.flag(n["archived"]),
        department_id=r.text(n.get("department_id")),
        appointment_id=r.text(n.get("appointment_id")),
        issued_at=r.datetime(n.get("issued_at")),
        expected_at=r.datetime(n.get("expected_at")),
        abnormal=r.flag(n.get("abnormal")),
    )


def report(r: Record, n: Names, obs: Names, img: Names) -> Report:
    """Builds a report's content.

    Lab content is read from the object named by ``n["lab"]`` (or the record itself when
    None), imaging content likewise from ``n["imaging"]``.

    Args:
        r: Answer record.
        n: Field names of the header and lab content.
        obs: Field names of one lab result line.
        img: Field names of imaging content.

    Returns:
        The report.
    """
    kind = r.code(n["report_type"], "report_type")
    lab: LabResult | None = None
    imaging: ImagingResult | None = None
    if kind == "LAB":
        lab_name = n.get("lab")
        lr = r.sub(lab_name) if lab_name else r
        lab = LabResult(
            specimen=lr.text(n.get("specimen")),
            collected_at=lr.datetime(n.get("collected_at")),
            observations=tuple(
                Observation(
                    code=o.text(obs["code"]),
                    name=o.text(obs["name"]),
                    abbreviation=o.text(obs.get("abbreviation")),
                    value=o.text(obs["value"]),
                    unit=o.text(obs.get("unit")),
                    range_text=o.text(obs.get("range_text")),
                    low=o.text(obs.get("low")),
                    high=o.text(obs.get("high")),
                    flag=o.text(obs.get("flag")),
                    order=o.integer(obs.get("order")),
                )
                for o in lr.items(n["observations"] or "")
            ),
        )
    else:
        img_name = n.get("imaging")
        ir = r.sub(img_name) if img_name else r
        imaging = ImagingResult(
            modality=ir.text(img["modality"]),
            body_part=ir.text(img.get("body_part")),
            method=ir.text(img.get("method")),
            findings=ir.text(img["findings"]),
            conclusion=ir.text(img["conclusion"]),
            study_uid=ir.text(img.get("study_uid")),
        )
    return Report(
        report_id=r.text(n["report_id"]),
        report_type=kind,
        title=r.text(n["title"]),
        diagnosis=r.text(n.get("diagnosis")),
        reporter=r.text(n.get("reporter")),
        verifier=r.text(n.get("verifier")),
        issued_at=r.datetime(n.get("issued_at")),
        lab=lab,
        imaging=imaging,
        patient_name=r.text(n.get("patient_name")),
    )


def _cards(r: Record, n: Names) -> tuple[PatientCard, ...]:
    name = n.get("cards")
    if name is None:
        return ()
    value = r.raw(name)
    if isinstance(value, str):
        # "TYPE:NUMBER,TYPE:NUMBER" in one column.
        out = []
        for part in value.split(","):
            kind, _, number = part.strip().partition(":")
            if number:
                out.append(PatientCard(r.code_value(kind, "card_type", name), number))
        return tuple(out)
    return tuple(
        PatientCard(c.code(n["card_type"], "card_type"), c.text(n["card_number_in_list"]))
        for c in r.items(name)
    )


def patient(r: Record, n: Names) -> Patient:
    """Builds a patient.

    Args:
        r: Answer record.
        n: Field names.

    Returns:
        The patient.
    """
    return Patient(
        patient_id=r.text(n["patient_id"]),
        gender=r.code(n.get("gender"), "gender") or "U",
        birth_date=r.date(n.get("birth_date")),
        id_type=r.code(n["id_type"], "id_type"),
        payer=r.code(n["payer"], "payer"),
        name=r.text(n["name"]),
        id_number=r.text(n["id_number"]),
        phone=r.text(n.get("phone")),
        address=r.text(n.get("address")),
        ethnicity=r.text(n.get("ethnicity")),
        card_number=r.text(n.get("card_number")),
        cards=_cards(r, n),
        insurance_number=r.text(n.get("insurance_number")),
    )
