"""Adapter for SOAP/XML HIS dialects: one method, a trade code per operation, coded tags."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
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
from mesh.observability import current_traceparent

__all__ = ["SoapHisAdapter"]

FIELDS = DOCUMENTED_FIELDS["soap"]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TRACE_NS = "urn:hplus:trace"
"""Namespace of the ``TraceContext`` SOAP header (``traceparent`` child)."""

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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _to_data(elem: Element) -> Any:
    """XML -> JSON-like data: leaves are text, ``<Item>`` children form a list."""
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    if all(_local(c.tag) == "Item" for c in children):
        return [_to_data(c) for c in children]
    return {_local(c.tag): _to_data(c) for c in children}


def _child(elem: Element, name: str) -> Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


class SoapHisAdapter(BaseAdapter):
    """Speaks a SOAP 1.1 HIS: one method whose trade code selects the operation.

    The HIS offers no incremental sync (:meth:`get_changes` raises
    :class:`HisCapabilityError`), and finds bookings, charges and refunds by our key.

    Args:
        settings: Settings with ``dialect="soap"`` and ``url`` the web service's base URL.
    """

    DIALECT: ClassVar[str] = "soap"
    DIALECT_CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        incremental_changes=False,
        appointment_query_by_key=True,
        charge_query_by_key=True,
        refund_query_by_key=True,
        bulk_slots=True,
    )
    REQUEST_FIELDS: ClassVar[Mapping[str, str]] = {
        "XM": "name",
        "XB": "gender",
        "CSRQ": "birth_date",
        "ZJLX": "id_card_type",
        "ZJHM": "id_card_number",
        "SJHM": "phone_number",
        "DZ": "address",
        "MZ": "ethnicity",
        "KLX": "card_type",
        "KH": "card_number",
        "FB": "payer_type",
    }

    def __init__(self, settings: DialectSettings) -> None:
        super().__init__(settings)
        self._http = HttpTransport(settings)
        self._url = settings.url.rstrip("/") + settings.soap_path

    @override
    async def aclose(self) -> None:
        await super().aclose()
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    def _n(self, name: str) -> str:
        return self._codec.name(name)

    def _envelope(self, trade_code: str, params: Mapping[str, Any]) -> bytes:
        ns = self.settings.soap_namespace
        env = Element(f"{{{SOAP_ENV}}}Envelope")
        traceparent = current_traceparent()
        if traceparent:
            # The W3C trace context as a SOAP header (ignored by an HIS that does not know
            # it: no mustUnderstand), so the HIS's logs can be joined with ours.
            header = SubElement(env, f"{{{SOAP_ENV}}}Header")
            context = SubElement(header, f"{{{TRACE_NS}}}TraceContext")
            SubElement(context, f"{{{TRACE_NS}}}traceparent").text = traceparent
        body = SubElement(env, f"{{{SOAP_ENV}}}Body")
        call = SubElement(body, f"{{{ns}}}{self.settings.soap_method}")
        SubElement(call, f"{{{ns}}}{self._n('TradeCode')}").text = trade_code
        request = SubElement(call, f"{{{ns}}}{self._n('Request')}")
        for key, value in params.items():
            if value is None or value == "":
                continue
            node = SubElement(request, f"{{{ns}}}{self._n(key)}")
            if isinstance(value, tuple):
                # A list parameter: (item element name, values).
                item_name, values = value
                for v in values:
                    SubElement(node, f"{{{ns}}}{self._n(item_name)}").text = str(v)
            else:
                node.text = str(value)
        xml: str = tostring(env, encoding="unicode")
        return ('<?xml version="1.0" encoding="utf-8"?>' + xml).encode("utf-8")

    async def _call(self, operation: str, params: Mapping[str, Any]) -> Any:
        """Runs one trade and returns its ``Data`` as JSON-like data.

        Raises:
            HisRejected: A business ``ResultCode``.
            HisUnavailable: HTTP 5xx other than a client fault.
            HisProtocolError: Not a readable SOAP answer.
        """
        write = operation in WRITE_OPERATIONS
        answer = await self._http.request(
            "POST",
            self._url,
            operation=operation,
            dialect=self.DIALECT,
            write=write,
            deadline=self._deadline(operation),
            data=self._envelope(self.settings.trade_code(operation), params),
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": f'"{self.settings.soap_namespace}/{self.settings.soap_method}"',
            },
        )
        try:
            root = SafeET.fromstring(answer.body)
        except (SafeET.ParseError, DefusedXmlException, ValueError):
            if answer.status >= 500:
                raise HisUnavailable(
                    f"{operation}: HTTP {answer.status}",
                    operation=operation,
                    dialect=self.DIALECT,
                    cause="http_5xx",
                ) from None
            raise HisProtocolError(
                f"{operation}: the answer is not XML",
                operation=operation,
                dialect=self.DIALECT,
            ) from None
        body = _child(root, "Body")
        if body is None:
            raise HisProtocolError(
                f"{operation}: no soap:Body",
                field="Body",
                operation=operation,
                dialect=self.DIALECT,
            )
        fault = _child(body, "Fault")
        if fault is not None:
            code_elem = _child(fault, "faultcode")
            fault_code = (code_elem.text or "") if code_elem is not None else ""
            if answer.status >= 500 and not fault_code.endswith("Client"):
                raise HisUnavailable(
                    f"{operation}: SOAP fault {fault_code} (HTTP {answer.status})",
                    operation=operation,
                    dialect=self.DIALECT,
                    cause="http_5xx",
                )
            raise HisProtocolError(
                f"{operation}: the HIS refused our request as malformed ({fault_code})",
                operation=operation,
                dialect=self.DIALECT,
            )
        if answer.status >= 500:
            raise HisUnavailable(
                f"{operation}: HTTP {answer.status}",
                operation=operation,
                dialect=self.DIALECT,
                cause="http_5xx",
            )
        response_name = self.settings.soap_method + "Response"
        call = _child(body, response_name)
        result = _child(call, self._n("Response")) if call is not None else None
        if result is None:
            raise HisProtocolError(
                f"{operation}: no {response_name}/Response in the answer",
                field=response_name,
                operation=operation,
                dialect=self.DIALECT,
            )
        envelope = self._codec.record(_to_data(result), operation, where="Response")
        code = envelope.text("ResultCode")
        if code != "0":
            parameter = envelope.text("ErrorParam") if envelope.has("ErrorParam") else ""
            raise self._refusal(code, envelope.text("ResultMsg"), operation, parameter=parameter)
        data_elem = _child(result, self._n("Data"))
        if data_elem is None:
            raise HisProtocolError(
                f"field {self._n('Data')!r} of the {operation} answer: missing",
                field=self._n("Data"),
                operation=operation,
                dialect=self.DIALECT,
            )
        return _to_data(data_elem)

    def _rec(self, data: Any, operation: str) -> Record:
        return self._codec.record(data, operation, where="Data")

    async def _list(self, operation: str, params: Mapping[str, Any], name: str) -> list[Record]:
        return self._rec(await self._call(operation, params), operation).items(name)

    def _code(self, table: str, neutral: str, operation: str) -> str:
        return self._codec.encode(table, neutral, operation=operation)

    # ------------------------------------------------------------------ directory

    @override
    async def list_departments(self) -> tuple[Department, ...]:
        op = "list_departments"
        with self._logged(op):
            return tuple(E.department(r, DEPT) for r in await self._list(op, {}, "KSLB"))

    @override
    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        op = "list_doctors"
        with self._logged(op):
            rows = await self._list(op, {"KSDM": department_id}, "YSLB")
            return tuple(E.doctor(r, DOCTOR) for r in rows)

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
            params = {
                "KSDM": department_id,
                "YSDM": doctor_id,
                "KSRQ": start.isoformat() if start else "",
                "JSRQ": end.isoformat() if end else "",
            }
            return tuple(E.schedule(r, SCHEDULE) for r in await self._list(op, params, "PBLB"))

    @override
    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        op = "list_slots"
        with self._logged(op):
            return tuple(
                E.slot(r, SLOT) for r in await self._list(op, {"PBID": schedule_id}, "HYLB")
            )

    @override
    async def list_slots_between(
        self, *, start: dt.date, end: dt.date | None = None
    ) -> tuple[Slot, ...]:
        op = "list_slots_between"
        self._require("bulk_slots", op)
        with self._logged(op):
            params = {"KSRQ": start.isoformat(), "JSRQ": end.isoformat() if end else ""}
            rows = await self._list(op, params, "HYLB")
            return await converted(rows, lambda r: E.slot(r, SLOT))

    @override
    async def get_changes(self, since: str | None = None) -> Changes:
        self._require("incremental_changes", "get_changes")
        raise AssertionError("unreachable: the SOAP dialect has no incremental sync")

    # ------------------------------------------------------------------ appointments

    def _appt(self, data: Any, op: str) -> Appointment:
        return E.appointment(self._rec(data, op), APPOINTMENT)

    @override
    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        op = "hold"
        with self._logged(op):
            params = {
                "HYID": slot_id,
                "BRID": patient_id,
                "FB": self._code("payer", payer, op),
                "SDSC": str(minutes) if minutes else "",
                "JYLSH": key,
            }
            return self._appt(await self._call(op, params), op)

    @override
    async def release_hold(self, hold_id: str) -> Appointment:
        op = "release_hold"
        with self._logged(op):
            return self._appt(await self._call(op, {"SDID": hold_id}), op)

    def _payment(self, payment: Payment, op: str) -> dict[str, Any]:
        return {
            "ZFFS": self._code("payment_method", payment.method, op),
            "ZFJYH": payment.transaction_id,
            "SHDDH": payment.merchant_order_id,
            "ZFJE": self._codec.money_out(payment.amount),
            "ZFSJ": self._codec.datetime_out(payment.paid_at) if payment.paid_at else "",
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
            params: dict[str, Any] = {
                "SDID": hold_id,
                "HYID": "" if hold_id else slot_id,
                "BRID": patient_id,
                "FB": self._code("payer", payer, op),
                "JYLSH": key,
            }
            if payment is not None:
                params.update(self._payment(payment, op))
            return self._appt(await self._call(op, params), op)

    @override
    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        op = "cancel"
        with self._logged(op):
            params = {"GHID": appointment_id, "BRID": patient_id, "TYYY": reason, "JYLSH": key}
            return self._appt(await self._call(op, params), op)

    @override
    async def get_appointment(self, appointment_id: str) -> Appointment:
        op = "get_appointment"
        with self._logged(op):
            return self._appt(await self._call(op, {"GHID": appointment_id}), op)

    async def _by_key(self, op: str, capability: str, key: str) -> Any:
        self._require(capability, op)
        try:
            return await self._call(op, {"JYLSH": key})
        except HisRejected as err:
            if err.reason is RejectReason.NOT_FOUND:
                return None
            raise

    @override
    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        op = "get_appointment"
        with self._logged(op):
            data = await self._by_key(op, "appointment_query_by_key", key)
            return None if data is None else self._appt(data, op)

    @override
    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        op = "list_appointments"
        with self._logged(op):
            rows = await self._list(op, {"BRID": patient_id}, "GHLB")
            return tuple(E.appointment(r, APPOINTMENT) for r in rows)

    # ------------------------------------------------------------------ billing

    @override
    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        op = "list_bills"
        with self._logged(op):
            rows = await self._list(op, {"BRID": patient_id}, "CFLB")
            return tuple(E.bill(r, BILL, BILL_ITEM) for r in rows)

    @override
    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        op = "quote"
        with self._logged(op):
            params = {
                "BRID": patient_id,
                "CFHLB": ("CFH", tuple(bill_ids)),
                "FB": self._code("payer", payer, op),
            }
            return E.quote(self._rec(await self._call(op, params), op), QUOTE)

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
            params: dict[str, Any] = {
                "BRID": patient_id,
                "CFHLB": ("CFH", tuple(bill_ids)),
                "FB": self._code("payer", payer, op),
                **self._payment(payment, op),
                "JYLSH": key,
            }
            return E.charge(self._rec(await self._call(op, params), op), CHARGE)

    @override
    async def get_charge(self, charge_id: str) -> Charge:
        op = "get_charge"
        with self._logged(op):
            return E.charge(self._rec(await self._call(op, {"JSID": charge_id}), op), CHARGE)

    @override
    async def find_charge_by_key(self, key: str) -> Charge | None:
        op = "get_charge"
        with self._logged(op):
            data = await self._by_key(op, "charge_query_by_key", key)
            return None if data is None else E.charge(self._rec(data, op), CHARGE)

    @override
    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        op = "refund"
        with self._logged(op):
            params = {
                "JSID": charge_id,
                "TFJE": self._codec.money_out(amount) if amount is not None else "",
                "TFYY": reason,
                "JYLSH": key,
            }
            return E.refund(self._rec(await self._call(op, params), op), REFUND)

    @override
    async def get_refund(self, refund_id: str) -> Refund:
        op = "get_refund"
        with self._logged(op):
            return E.refund(self._rec(await self._call(op, {"TFID": refund_id}), op), REFUND)

    @override
    async def find_refund_by_key(self, key: str) -> Refund | None:
        op = "get_refund"
        with self._logged(op):
            data = await self._by_key(op, "refund_query_by_key", key)
            return None if data is None else E.refund(self._rec(data, op), REFUND)

    @override
    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        op = "daily_ledger"
        with self._logged(op):
            r = self._rec(await self._call(op, {"RQ": day.isoformat()}), op)
            return DailyLedger(
                date=r.date("RQ") or day,
                closed=r.flag("RJBZ"),
                entries=tuple(E.ledger_entry(x, LEDGER) for x in r.items("MXLB")),
            )

    # ------------------------------------------------------------------ reports

    @override
    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        op = "list_reports"
        with self._logged(op):
            rows = await self._list(op, {"BRID": patient_id}, "BGLB")
            return tuple(E.report_summary(r, REPORT_SUMMARY) for r in rows)

    @override
    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_report"
        with self._logged(op):
            data = await self._call(op, {"BGID": report_id, "BRID": patient_id})
            return E.report(self._rec(data, op), REPORT, OBSERVATION, IMAGING)

    @override
    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        op = "get_archived_report"
        self._require("archived_reports", op)
        with self._logged(op):
            data = await self._call(op, {"BGID": report_id, "BRID": patient_id})
            return E.report(self._rec(data, op), REPORT, OBSERVATION, IMAGING)

    # ------------------------------------------------------------------ patients

    @override
    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        op = "register_patient"
        reg = registration
        with self._logged(op):
            params = {
                "XM": reg.name,
                "XB": self._code("gender", reg.gender, op) if reg.gender else "",
                "CSRQ": reg.birth_date.isoformat() if reg.birth_date else "",
                "ZJLX": self._code("id_type", reg.id_type, op),
                "ZJHM": reg.id_number,
                "SJHM": reg.phone,
                "DZ": reg.address,
                "MZ": reg.ethnicity,
                "KLX": self._code("card_type", reg.card_type, op) if reg.card_number else "",
                "KH": reg.card_number,
                "FB": self._code("payer", reg.payer, op),
            }
            r = self._rec(await self._call(op, params), op)
            return RegisteredPatient(E.patient(r.sub("BRXX"), PATIENT), r.flag("XJBZ"))

    @override
    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        op = "find_patients"
        self._check_find_args(id_number, card_number, phone, name)
        with self._logged(op):
            params = {"ZJHM": id_number, "KH": card_number, "SJHM": phone, "XM": name}
            return tuple(E.patient(r, PATIENT) for r in await self._list(op, params, "BRLB"))
