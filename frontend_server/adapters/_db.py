"""Adapter for database HIS dialects: ``V_HIS_*`` views to read, procedure tables to write.

A write inserts a row into the request table and polls the response table by request id
until the deadline. The HIS keeps no caller key: after a lost answer, only its views (and
our own ledger) tell whether the write happened. The SQL side (engine, view reads,
procedure calls, driver errors) is :class:`~frontend_server.adapters._dbaccess.DbAccess`;
this module maps the operations onto the vendor's views and procedures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from typing_extensions import override

from frontend_server.adapters import _entities as E
from frontend_server.adapters._base import converted
from frontend_server.adapters._codec import Record
from frontend_server.adapters._dbaccess import DbAccess
from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    BillItem,
    Capabilities,
    Changes,
    Charge,
    DailyLedger,
    DeletedEntity,
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
from frontend_server.adapters._errors import HisProtocolError, HisRejected, RejectReason
from frontend_server.adapters._fieldmaps import DOCUMENTED_FIELDS

__all__ = ["DbHisAdapter"]

FIELDS = DOCUMENTED_FIELDS["db"]

DEPT = FIELDS["department"]
DOCTOR = FIELDS["doctor"]
SCHEDULE = FIELDS["schedule"]
SLOT = FIELDS["slot"]
APPOINTMENT = FIELDS["appointment"]
BILL = FIELDS["bill"]
BILL_ITEM = FIELDS["bill_item"]
QUOTE = FIELDS["quote"]
CHARGE = FIELDS["charge"]
REFUND = FIELDS["refund"]
LEDGER = FIELDS["ledger_entry"]
REPORT_SUMMARY = FIELDS["report_summary"]
REPORT = FIELDS["report"]
OBSERVATION = FIELDS["observation"]
IMAGING = FIELDS["imaging"]
PATIENT = FIELDS["patient"]
_DELETED_KINDS = {"SCHEDULE": "SCHEDULE", "SLOT": "SLOT"}
_WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class DbHisAdapter(DbAccess):
    """Speaks a database HIS through SQLAlchemy 2 (async): views and procedure tables.

    This HIS stores no caller key: the ``key`` of a write is not sent (after a lost answer
    only its views and our ledger tell whether the write happened), and the
    ``find_*_by_key`` lookups raise :class:`HisCapabilityError`. Directory changes come
    from each view's ``MODIFY_TIME`` and the deletion log.

    Args:
        settings: Settings with ``dialect="db"`` and ``url`` an async SQLAlchemy URL.
    """

    DIALECT: ClassVar[str] = "db"
    MONEY_IN_FEN: ClassVar[bool] = True
    DIALECT_CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        incremental_changes=True,
        appointment_query_by_key=False,
        charge_query_by_key=False,
        refund_query_by_key=False,
        bulk_slots=True,
    )
    REQUEST_FIELDS: ClassVar[Mapping[str, str]] = {
        "PATIENT_NAME": "name",
        "SEX": "gender",
        "BIRTHDAY": "birth_date",
        "CERT_TYPE": "id_card_type",
        "CERT_NO": "id_card_number",
        "MOBILE": "phone_number",
        "ADDRESS": "address",
        "NATION": "ethnicity",
        "CARD_TYPE": "card_type",
        "CARD_NO": "card_number",
        "FEE_TYPE": "payer_type",
    }

    def _code(self, table: str, neutral: str, operation: str) -> str:
        return self._codec.encode(table, neutral, operation=operation)

    def _not_found(self, op: str, what: str) -> HisRejected:
        return HisRejected(
            RejectReason.NOT_FOUND, "", f"{what} not found", operation=op, dialect=self.DIALECT
        )

    # ------------------------------------------------------------------ directory

    @override
    async def list_departments(self) -> tuple[Department, ...]:
        op = "list_departments"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_DEPT")
            return tuple(E.department(r, DEPT) for r in rows)

    def _doctors(self, rows: list[Record]) -> list[Doctor]:
        """Merges the one-row-per-department view into doctors."""
        merged: dict[str, Doctor] = {}
        for r in rows:
            d = E.doctor(r, DOCTOR)
            seen = merged.get(d.doctor_id)
            if seen is None:
                merged[d.doctor_id] = d
            elif d.department_ids[0] not in seen.department_ids:
                merged[d.doctor_id] = replace(
                    seen, department_ids=seen.department_ids + d.department_ids
                )
        return list(merged.values())

    @override
    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        op = "list_doctors"
        with self._logged(op):
            doctors = self._doctors(await self._select(op, "V_HIS_DOCTOR"))
            return tuple(
                d for d in doctors if not department_id or department_id in d.department_ids
            )

    @override
    async def list_schedules(
        self,
        *,
        department_id: str = "",
        doctor_id: str = "",
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> tuple[Schedule, ...]:
        op = "list_schedules"
        with self._logged(op):
            where: list[tuple[str, str, Any]] = []
            if department_id:
                where.append(("DEPT_ID", "=", department_id))
            if doctor_id:
                where.append(("DOC_ID", "=", doctor_id))
            if start:
                where.append(("WORK_DATE", ">=", start))
            if end:
                where.append(("WORK_DATE", "<=", end))
            rows = await self._select(op, "V_HIS_DOCTOR_SCHEDULE", where)
            return tuple(E.schedule(r, SCHEDULE) for r in rows)

    @override
    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        op = "list_slots"
        with self._logged(op):
            rows = await self._select(
                op, "V_HIS_SCHEDULE_SOURCE", [("SCHEDULE_ID", "=", schedule_id)]
            )
            return tuple(E.slot(r, SLOT) for r in rows)

    @override
    async def list_slots_between(
        self, *, start: dt.date, end: dt.date | None = None
    ) -> tuple[Slot, ...]:
        op = "list_slots_between"
        self._require("bulk_slots", op)
        with self._logged(op):
            where: list[tuple[str, str, Any]] = [
                ("BEGIN_TIME", ">=", dt.datetime.combine(start, dt.time()))
            ]
            if end is not None:
                after = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
                where.append(("BEGIN_TIME", "<", after))
            rows = await self._select(op, "V_HIS_SCHEDULE_SOURCE", where)
            return await converted(rows, lambda r: E.slot(r, SLOT))

    @override
    async def get_changes(self, since: str | None = None) -> Changes:
        op = "get_changes"
        self._require("incremental_changes", op)
        mark = dt.datetime.strptime(since, _WATERMARK_FORMAT) if since else None
        with self._logged(op):

            def after(column: str) -> list[tuple[str, str, Any]]:
                return [(column, ">", mark)] if mark is not None else []

            modified = after("MODIFY_TIME")
            depts = [E.department(r, DEPT) for r in await self._select(op, "V_HIS_DEPT", modified)]
            doctors = self._doctors(await self._select(op, "V_HIS_DOCTOR", modified))
            schedules = [
                E.schedule(r, SCHEDULE)
                for r in await self._select(op, "V_HIS_DOCTOR_SCHEDULE", modified)
            ]
            slots = [
                E.slot(r, SLOT) for r in await self._select(op, "V_HIS_SCHEDULE_SOURCE", modified)
            ]
            deleted = []
            for r in await self._select(op, "V_HIS_DELETED_LOG", after("DELETE_TIME")):
                raw_kind = r.text("ENTITY_TYPE")
                kind = _DELETED_KINDS.get(raw_kind)
                if kind is None:
                    raise r.error("ENTITY_TYPE", f"unknown entity type {raw_kind!r}")
                deleted.append(DeletedEntity(kind, r.text("ENTITY_ID"), r.datetime("DELETE_TIME")))
            stamps: list[dt.datetime | None] = [x.modified_at for x in depts]
            stamps += [x.modified_at for x in doctors]
            stamps += [x.modified_at for x in schedules]
            stamps += [x.modified_at for x in slots]
            stamps += [x.deleted_at for x in deleted]
            times = [t for t in stamps if t is not None]
            latest = max(times).replace(tzinfo=None) if times else mark
            return Changes(
                departments=tuple(depts),
                doctors=tuple(doctors),
                schedules=tuple(schedules),
                slots=tuple(slots),
                deleted=tuple(deleted),
                watermark=latest.strftime(_WATERMARK_FORMAT) if latest else "",
            )

    # ------------------------------------------------------------------ appointments

    @override
    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        op = "hold"
        with self._logged(op):
            params = {
                "SOURCE_ID": slot_id,
                "PATIENT_ID": patient_id,
                "FEE_TYPE": self._code("payer", payer, op),
                "LOCK_MINUTES": minutes or None,
            }
            return E.appointment(await self._proc(op, "P_LOCK_SOURCE", params), APPOINTMENT)

    @override
    async def release_hold(self, hold_id: str) -> Appointment:
        op = "release_hold"
        with self._logged(op):
            out = await self._proc(op, "P_UNLOCK_SOURCE", {"LOCK_ID": hold_id})
            return E.appointment(out, APPOINTMENT)

    @override
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
        op = "book"
        with self._logged(op):
            params: dict[str, Any] = {
                "LOCK_ID": hold_id,
                "SOURCE_ID": "" if hold_id else slot_id,
                "PATIENT_ID": patient_id,
                "FEE_TYPE": self._code("payer", payer, op),
            }
            if payment is not None:
                params.update(self._payment(payment, op))
            return E.appointment(await self._proc(op, "P_REGISTER", params), APPOINTMENT)

    def _payment(self, payment: Payment, op: str) -> dict[str, Any]:
        return {
            "PAY_MODE": self._code("payment_method", payment.method, op),
            "PAY_TRADE_NO": payment.transaction_id,
            "MERCHANT_ORDER_NO": payment.merchant_order_id,
            "PAY_AMOUNT_FEN": self._codec.money_out(payment.amount),
            "PAY_TIME": self._codec.datetime_out(payment.paid_at) if payment.paid_at else "",
        }

    @override
    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        op = "cancel"
        with self._logged(op):
            params = {"REG_ID": appointment_id, "PATIENT_ID": patient_id, "REASON": reason}
            return E.appointment(await self._proc(op, "P_CANCEL_REG", params), APPOINTMENT)

    @override
    async def get_appointment(self, appointment_id: str) -> Appointment:
        op = "get_appointment"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REG_RECORD", [("REG_ID", "=", appointment_id)])
            if not rows:
                rows = await self._select(
                    op, "V_HIS_REG_RECORD", [("LOCK_ID", "=", appointment_id)]
                )
            if not rows:
                raise self._not_found(op, "appointment")
            return E.appointment(rows[0], APPOINTMENT)

    @override
    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        op = "get_appointment"
        self._require("appointment_query_by_key", op)
        raise AssertionError("unreachable: the database dialect stores no caller key")

    @override
    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        op = "list_appointments"
        with self._logged(op):
            order = f"{self._col('VISIT_BEGIN')} DESC, {self._col('CREATE_TIME')} DESC"
            rows = await self._select(
                op, "V_HIS_REG_RECORD", [("PATIENT_ID", "=", patient_id)], order_by=order
            )
            return tuple(E.appointment(r, APPOINTMENT) for r in rows)

    # ------------------------------------------------------------------ billing

    @override
    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        op = "list_bills"
        with self._logged(op):
            bills = await self._select(op, "V_HIS_UNPAID_RECIPE", [("PATIENT_ID", "=", patient_id)])
            ids = [b.text("RECIPE_NO") for b in bills]
            lines: dict[str, list[tuple[int, BillItem]]] = {}
            if ids:
                for r in await self._select(op, "V_HIS_RECIPE_ITEM", [("RECIPE_NO", "IN", ids)]):
                    lines.setdefault(r.text("RECIPE_NO"), []).append(
                        (r.integer("ITEM_NO"), E.bill_item(r, BILL_ITEM))
                    )
            return tuple(
                E.bill(
                    b,
                    BILL,
                    BILL_ITEM,
                    tuple(item for _, item in sorted(lines.get(bill_id, []), key=lambda x: x[0])),
                )
                for b, bill_id in zip(bills, ids, strict=True)
            )

    @override
    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        op = "quote"
        with self._logged(op):
            params = {
                "PATIENT_ID": patient_id,
                "RECIPE_NOS": ",".join(bill_ids),
                "FEE_TYPE": self._code("payer", payer, op),
            }
            return E.quote(await self._proc(op, "P_PRE_SETTLE", params), QUOTE)

    @override
    async def settle(
        self,
        *,
        patient_id: str,
        bill_ids: Sequence[str],
        payment: Payment,
        key: str,
        payer: str = "SELF",
    ) -> Charge:
        op = "settle"
        with self._logged(op):
            params = {
                "PATIENT_ID": patient_id,
                "RECIPE_NOS": ",".join(bill_ids),
                "FEE_TYPE": self._code("payer", payer, op),
                **self._payment(payment, op),
            }
            return E.charge(await self._proc(op, "P_SETTLE", params), CHARGE)

    @override
    async def get_charge(self, charge_id: str) -> Charge:
        op = "get_charge"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_SETTLE", [("SETTLE_ID", "=", charge_id)])
            if not rows:
                raise self._not_found(op, "charge")
            return E.charge(rows[0], CHARGE)

    @override
    async def find_charge_by_key(self, key: str) -> Charge | None:
        self._require("charge_query_by_key", "get_charge")
        raise AssertionError("unreachable: the database dialect stores no caller key")

    @override
    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        op = "refund"
        with self._logged(op):
            params = {
                "SETTLE_ID": charge_id,
                "REFUND_FEN": self._codec.money_out(amount) if amount is not None else None,
                "REASON": reason,
            }
            return E.refund(await self._proc(op, "P_REFUND", params), REFUND)

    @override
    async def get_refund(self, refund_id: str) -> Refund:
        op = "get_refund"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REFUND", [("REFUND_ID", "=", refund_id)])
            if not rows:
                raise self._not_found(op, "refund")
            return E.refund(rows[0], REFUND)

    @override
    async def find_refund_by_key(self, key: str) -> Refund | None:
        self._require("refund_query_by_key", "get_refund")
        raise AssertionError("unreachable: the database dialect stores no caller key")

    @override
    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        op = "daily_ledger"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_DAY_LEDGER", [("BIZ_DATE", "=", day)])
            return DailyLedger(
                date=day,
                closed=day < self._codec.today(),
                entries=tuple(E.ledger_entry(r, LEDGER) for r in rows),
            )

    # ------------------------------------------------------------------ reports

    @override
    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        op = "list_reports"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REPORT", [("PATIENT_ID", "=", patient_id)])
            return tuple(E.report_summary(r, REPORT_SUMMARY) for r in rows)

    @override
    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_report"
        with self._logged(op):
            params = {"REPORT_ID": report_id, "PATIENT_ID": patient_id}
            out = await self._proc(op, "P_GET_REPORT", params)
            return E.report(out, REPORT, OBSERVATION, IMAGING)

    @override
    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_archived_report"
        self._require("archived_reports", op)
        with self._logged(op):
            params = {"REPORT_ID": report_id, "PATIENT_ID": patient_id}
            out = await self._proc(op, "P_GET_ARCHIVED_REPORT", params)
            return E.report(out, REPORT, OBSERVATION, IMAGING)

    # ------------------------------------------------------------------ patients

    @override
    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        op = "register_patient"
        reg = registration
        with self._logged(op):
            params = {
                "PATIENT_NAME": reg.name,
                "SEX": self._code("gender", reg.gender, op) if reg.gender else "",
                "BIRTHDAY": reg.birth_date.isoformat() if reg.birth_date else "",
                "CERT_TYPE": self._code("id_type", reg.id_type, op),
                "CERT_NO": reg.id_number,
                "MOBILE": reg.phone,
                "ADDRESS": reg.address,
                "NATION": reg.ethnicity,
                "CARD_TYPE": self._code("card_type", reg.card_type, op) if reg.card_number else "",
                "CARD_NO": reg.card_number,
                "FEE_TYPE": self._code("payer", reg.payer, op),
            }
            out = await self._proc(op, "P_CREATE_PATIENT", params)
            patient_id = out.text("PATIENT_ID")
            rows = await self._select(op, "V_HIS_PATIENT", [("PATIENT_ID", "=", patient_id)])
            if not rows:
                raise HisProtocolError(
                    f"{op}: patient created but not in the patient view",
                    field="PATIENT_ID",
                    operation=op,
                    dialect=self.DIALECT,
                )
            return RegisteredPatient(E.patient(rows[0], PATIENT), out.flag("IS_NEW"))

    @override
    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        op = "find_patients"
        self._check_find_args(id_number, card_number, phone, name)
        with self._logged(op):
            where: list[tuple[str, str, Any]] = []
            if id_number:
                where.append(("CERT_NO", "=", id_number.upper()))
            elif phone:
                where.append(("MOBILE", "=", phone))
            if name:
                where.append(("PATIENT_NAME", "=", name))
            if card_number:
                # Cards live in two columns; match exactly after a coarse SQL filter.
                where.append(("BIND_CARDS", "LIKE", f"%{card_number}%"))
                rows = await self._select(op, "V_HIS_PATIENT", where)
                rows += await self._select(
                    op, "V_HIS_PATIENT", [*where[:-1], ("CARD_NO", "=", card_number)]
                )
            else:
                rows = await self._select(op, "V_HIS_PATIENT", where)
            found: dict[str, Patient] = {}
            for r in rows:
                p = E.patient(r, PATIENT)
                if card_number and card_number not in {
                    p.card_number,
                    *(c.card_number for c in p.cards),
                }:
                    continue
                found.setdefault(p.patient_id, p)
            return tuple(sorted(found.values(), key=lambda p: p.patient_id))
