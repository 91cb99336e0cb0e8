"""Adapter for REST/JSON HIS dialects (camelCase JSON, yuan strings, ``{code, data}``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote as url_quote

from typing_extensions import override

from frontend_server.adapters import _entities as E
from frontend_server.adapters._base import WRITE_OPERATIONS, BaseAdapter, converted
from frontend_server.adapters._codec import Record
from frontend_server.adapters._domain import (
    Appointment,
    Bill,
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
from frontend_server.adapters._errors import (
    HisProtocolError,
    HisRejected,
    HisUnavailable,
    RejectReason,
)
from frontend_server.adapters._fieldmaps import DOCUMENTED_FIELDS
from frontend_server.adapters._http import HttpTransport
from frontend_server.adapters._settings import DialectSettings

__all__ = ["RestHisAdapter"]

FIELDS = DOCUMENTED_FIELDS["rest"]

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
_DELETED_KINDS = {"schedule": "SCHEDULE", "source": "SLOT"}


class RestHisAdapter(BaseAdapter):
    """Speaks a REST/JSON HIS.

    Operations are ``GET``/``POST`` under a base path; answers are
    ``{"code": 0, "message": …, "data": …}``; errors an HTTP status plus a vendor ``code``.

    Args:
        settings: Settings with ``dialect="rest"`` and ``url`` the HIS's base URL.
    """

    DIALECT: ClassVar[str] = "rest"
    DIALECT_CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        incremental_changes=True,
        appointment_query_by_key=True,
        charge_query_by_key=True,
        refund_query_by_key=True,
        bulk_slots=True,
    )
    REQUEST_FIELDS: ClassVar[Mapping[str, str]] = {
        "name": "name",
        "sex": "gender",
        "birthday": "birth_date",
        "certType": "id_card_type",
        "certNo": "id_card_number",
        "mobile": "phone_number",
        "address": "address",
        "nation": "ethnicity",
        "cardType": "card_type",
        "cardNo": "card_number",
        "feeType": "payer_type",
    }

    def __init__(self, settings: DialectSettings) -> None:
        super().__init__(settings)
        self._http = HttpTransport(settings)
        self._base = settings.url.rstrip("/") + settings.rest_base_path.rstrip("/")

    @override
    async def aclose(self) -> None:
        await super().aclose()
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    def _n(self, name: str) -> str:
        return self._codec.name(name)

    def _body(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Renames documented request keys and drops empty optional ones."""
        out: dict[str, Any] = {}
        for key, value in fields.items():
            if value is None or value == "":
                continue
            if isinstance(value, Mapping):
                value = self._body(value)
            out[self._n(key)] = value
        return out

    async def _call(
        self,
        operation: str,
        method: str,
        *,
        path_op: str | None = None,
        resource_id: str = "",
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Runs one operation and returns the answer's ``data``.

        Raises:
            HisRejected: A business error code.
            HisUnavailable: HTTP 5xx or the vendor's outage code.
            HisProtocolError: The answer is not the expected JSON envelope.
        """
        path = self.settings.rest_path(path_op or operation).replace(
            "{id}", url_quote(resource_id, safe="")
        )
        write = operation in WRITE_OPERATIONS
        answer = await self._http.request(
            method,
            self._base + path,
            operation=operation,
            dialect=self.DIALECT,
            write=write,
            deadline=self._deadline(operation),
            params=self._body(query or {}) or None,
            json=self._body(body) if body is not None else None,
        )
        code_key, message_key, data_key = self._n("code"), self._n("message"), self._n("data")
        try:
            envelope = json.loads(answer.body) if answer.body else None
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or code_key not in envelope:
            if answer.status >= 500:
                raise HisUnavailable(
                    f"{operation}: HTTP {answer.status}",
                    operation=operation,
                    dialect=self.DIALECT,
                    cause="http_5xx",
                )
            raise HisProtocolError(
                f"{operation}: HTTP {answer.status} answer is not a JSON envelope with "
                f"{code_key!r}",
                field=code_key,
                operation=operation,
                dialect=self.DIALECT,
            )
        code = str(envelope.get(code_key))
        if code != "0":
            if answer.status >= 500 and self._codec.error_reason(code) == "UNKNOWN":
                raise HisUnavailable(
                    f"{operation}: HTTP {answer.status} (vendor code {code})",
                    operation=operation,
                    dialect=self.DIALECT,
                    cause="http_5xx",
                )
            refused = envelope.get(data_key)
            parameter = refused.get(self._n("param"), "") if isinstance(refused, dict) else ""
            raise self._refusal(
                code, str(envelope.get(message_key, "")), operation, parameter=str(parameter)
            )
        if data_key not in envelope:
            raise HisProtocolError(
                f"field {data_key!r} of the {operation} answer: missing",
                field=data_key,
                operation=operation,
                dialect=self.DIALECT,
            )
        return envelope[data_key]

    def _rec(self, data: Any, operation: str) -> Record:
        return self._codec.record(data, operation)

    def _recs(self, data: Any, operation: str) -> list[Record]:
        if data is None:
            return []
        if not isinstance(data, list):
            raise HisProtocolError(
                f"the {operation} answer's data is not a list",
                field="data",
                operation=operation,
                dialect=self.DIALECT,
            )
        return [self._codec.record(d, operation, where=f"data[{i}]") for i, d in enumerate(data)]

    def _code(self, table: str, neutral: str, operation: str) -> str:
        return self._codec.encode(table, neutral, operation=operation)

    # ------------------------------------------------------------------ directory

    @override
    async def list_departments(self) -> tuple[Department, ...]:
        op = "list_departments"
        with self._logged(op):
            data = await self._call(op, "GET")
            return tuple(E.department(r, DEPT) for r in self._recs(data, op))

    @override
    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        op = "list_doctors"
        with self._logged(op):
            data = await self._call(op, "GET", query={"deptCode": department_id})
            return tuple(E.doctor(r, DOCTOR) for r in self._recs(data, op))

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
            query = {
                "deptCode": department_id,
                "doctorCode": doctor_id,
                "beginDate": start.isoformat() if start else "",
                "endDate": end.isoformat() if end else "",
            }
            data = await self._call(op, "GET", query=query)
            return tuple(E.schedule(r, SCHEDULE) for r in self._recs(data, op))

    @override
    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        op = "list_slots"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=schedule_id)
            return tuple(E.slot(r, SLOT) for r in self._recs(data, op))

    @override
    async def list_slots_between(
        self, *, start: dt.date, end: dt.date | None = None
    ) -> tuple[Slot, ...]:
        op = "list_slots_between"
        self._require("bulk_slots", op)
        with self._logged(op):
            query = {"beginDate": start.isoformat(), "endDate": end.isoformat() if end else ""}
            data = await self._call(op, "GET", query=query)
            return await converted(self._recs(data, op), lambda r: E.slot(r, SLOT))

    @override
    async def get_changes(self, since: str | None = None) -> Changes:
        op = "get_changes"
        self._require("incremental_changes", op)
        with self._logged(op):
            data = await self._call(op, "GET", query={"since": since or ""})
            r = self._rec(data, op)
            deleted = []
            for d in r.items("deleted"):
                raw_kind = d.text("type")
                kind = _DELETED_KINDS.get(raw_kind)
                if kind is None:
                    raise d.error("type", f"unknown deleted entity type {raw_kind!r}")
                deleted.append(DeletedEntity(kind, d.text("id"), d.datetime("deleteTime")))
            return Changes(
                departments=tuple(E.department(x, DEPT) for x in r.items("depts")),
                doctors=tuple(E.doctor(x, DOCTOR) for x in r.items("doctors")),
                schedules=tuple(E.schedule(x, SCHEDULE) for x in r.items("schedules")),
                slots=tuple(E.slot(x, SLOT) for x in r.items("sources")),
                deleted=tuple(deleted),
                watermark=r.text("serverTime"),
            )

    # ------------------------------------------------------------------ appointments

    @override
    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        op = "hold"
        with self._logged(op):
            body = {
                "sourceId": slot_id,
                "patientId": patient_id,
                "feeType": self._code("payer", payer, op),
                "lockMinutes": str(minutes) if minutes else "",
                "orderNo": key,
            }
            return E.appointment(
                self._rec(await self._call(op, "POST", body=body), op), APPOINTMENT
            )

    @override
    async def release_hold(self, hold_id: str) -> Appointment:
        op = "release_hold"
        with self._logged(op):
            data = await self._call(op, "POST", body={"lockId": hold_id})
            return E.appointment(self._rec(data, op), APPOINTMENT)

    def _payment(self, payment: Payment, op: str) -> dict[str, Any]:
        return {
            "payMode": self._code("payment_method", payment.method, op),
            "tradeNo": payment.transaction_id,
            "merchantOrderNo": payment.merchant_order_id,
            "payAmount": self._codec.money_out(payment.amount),
            "payTime": self._codec.datetime_out(payment.paid_at) if payment.paid_at else "",
        }

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
            body: dict[str, Any] = {
                "lockId": hold_id,
                "sourceId": "" if hold_id else slot_id,
                "patientId": patient_id,
                "feeType": self._code("payer", payer, op),
                "orderNo": key,
            }
            if payment is not None:
                body["payment"] = self._payment(payment, op)
            return E.appointment(
                self._rec(await self._call(op, "POST", body=body), op), APPOINTMENT
            )

    @override
    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        op = "cancel"
        with self._logged(op):
            body = {"patientId": patient_id, "reason": reason, "orderNo": key}
            data = await self._call(op, "POST", resource_id=appointment_id, body=body)
            return E.appointment(self._rec(data, op), APPOINTMENT)

    @override
    async def get_appointment(self, appointment_id: str) -> Appointment:
        op = "get_appointment"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=appointment_id)
            return E.appointment(self._rec(data, op), APPOINTMENT)

    @override
    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        op = "get_appointment"
        self._require("appointment_query_by_key", op)
        with self._logged(op):
            try:
                data = await self._call(
                    op, "GET", path_op="list_appointments", query={"orderNo": key}
                )
            except HisRejected as err:
                if err.reason is RejectReason.NOT_FOUND:
                    return None
                raise
            found = self._recs(data, op)
            return E.appointment(found[0], APPOINTMENT) if found else None

    @override
    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        op = "list_appointments"
        with self._logged(op):
            data = await self._call(op, "GET", query={"patientId": patient_id})
            return tuple(E.appointment(r, APPOINTMENT) for r in self._recs(data, op))

    # ------------------------------------------------------------------ billing

    @override
    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        op = "list_bills"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=patient_id)
            return tuple(E.bill(r, BILL, BILL_ITEM) for r in self._recs(data, op))

    @override
    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        op = "quote"
        with self._logged(op):
            body = {
                "patientId": patient_id,
                "billNos": list(bill_ids),
                "feeType": self._code("payer", payer, op),
            }
            return E.quote(self._rec(await self._call(op, "POST", body=body), op), QUOTE)

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
            body = {
                "patientId": patient_id,
                "billNos": list(bill_ids),
                "feeType": self._code("payer", payer, op),
                "payment": self._payment(payment, op),
                "orderNo": key,
            }
            return E.charge(self._rec(await self._call(op, "POST", body=body), op), CHARGE)

    @override
    async def get_charge(self, charge_id: str) -> Charge:
        op = "get_charge"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=charge_id)
            return E.charge(self._rec(data, op), CHARGE)

    @override
    async def find_charge_by_key(self, key: str) -> Charge | None:
        op = "get_charge"
        self._require("charge_query_by_key", op)
        with self._logged(op):
            try:
                data = await self._call(op, "GET", path_op="find_charge", query={"orderNo": key})
            except HisRejected as err:
                if err.reason is RejectReason.NOT_FOUND:
                    return None
                raise
            return E.charge(self._rec(data, op), CHARGE)

    @override
    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        op = "refund"
        with self._logged(op):
            body = {
                "refundAmount": self._codec.money_out(amount) if amount is not None else None,
                "reason": reason,
                "orderNo": key,
            }
            data = await self._call(op, "POST", resource_id=charge_id, body=body)
            return E.refund(self._rec(data, op), REFUND)

    @override
    async def get_refund(self, refund_id: str) -> Refund:
        op = "get_refund"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=refund_id)
            return E.refund(self._rec(data, op), REFUND)

    @override
    async def find_refund_by_key(self, key: str) -> Refund | None:
        op = "get_refund"
        self._require("refund_query_by_key", op)
        with self._logged(op):
            try:
                data = await self._call(op, "GET", path_op="find_refund", query={"orderNo": key})
            except HisRejected as err:
                if err.reason is RejectReason.NOT_FOUND:
                    return None
                raise
            return E.refund(self._rec(data, op), REFUND)

    @override
    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        op = "daily_ledger"
        with self._logged(op):
            r = self._rec(await self._call(op, "GET", query={"date": day.isoformat()}), op)
            return DailyLedger(
                date=r.date("date") or day,
                closed=r.flag("closed"),
                entries=tuple(E.ledger_entry(x, LEDGER) for x in r.items("records")),
            )

    # ------------------------------------------------------------------ reports

    @override
    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        op = "list_reports"
        with self._logged(op):
            data = await self._call(op, "GET", resource_id=patient_id)
            return tuple(E.report_summary(r, REPORT_SUMMARY) for r in self._recs(data, op))

    @override
    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_report"
        with self._logged(op):
            data = await self._call(
                op, "GET", resource_id=report_id, query={"patientId": patient_id}
            )
            return E.report(self._rec(data, op), REPORT, OBSERVATION, IMAGING)

    @override
    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_archived_report"
        self._require("archived_reports", op)
        with self._logged(op):
            data = await self._call(
                op, "GET", resource_id=report_id, query={"patientId": patient_id}
            )
            return E.report(self._rec(data, op), REPORT, OBSERVATION, IMAGING)

    # ------------------------------------------------------------------ patients

    @override
    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        op = "register_patient"
        reg = registration
        with self._logged(op):
            body = {
                "name": reg.name,
                "sex": self._code("gender", reg.gender, op) if reg.gender else "",
                "birthday": reg.birth_date.isoformat() if reg.birth_date else "",
                "certType": self._code("id_type", reg.id_type, op),
                "certNo": reg.id_number,
                "mobile": reg.phone,
                "address": reg.address,
                "nation": reg.ethnicity,
                "cardType": self._code("card_type", reg.card_type, op) if reg.card_number else "",
                "cardNo": reg.card_number,
                "feeType": self._code("payer", reg.payer, op),
            }
            r = self._rec(await self._call(op, "POST", body=body), op)
            return RegisteredPatient(E.patient(r.sub("patient"), PATIENT), r.flag("created"))

    @override
    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        op = "find_patients"
        self._check_find_args(id_number, card_number, phone, name)
        with self._logged(op):
            query = {"certNo": id_number, "cardNo": card_number, "mobile": phone, "name": name}
            data = await self._call(op, "GET", query=query)
            return tuple(E.patient(r, PATIENT) for r in self._recs(data, op))
