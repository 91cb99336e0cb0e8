"""The SOAP/XML HIS ("HuaKang HIS WebService"): one SOAP method, trade codes, pinyin tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as SafeET
from aiohttp import web
from defusedxml import DefusedXmlException

from tools.his_sim._base import SimBase, guarded
from tools.his_sim._model import (
    Appointment,
    Charge,
    HisError,
    Patient,
    Payment,
    Refund,
    Report,
    Slot,
)
from tools.his_sim._wire import (
    fen_to_yuan,
    fmt_date,
    fmt_dt,
    fmt_time,
    opt,
    parse_date,
    parse_dt,
    req,
    yuan_to_fen,
)

__all__ = ["SOAP_NS", "SOAP_PATH", "WS_NS", "SoapHis"]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
"""SOAP 1.1 envelope namespace."""
WS_NS = "urn:huakang:his:ws"
"""Namespace of the ``HisCall`` method and its response."""
SOAP_PATH = "/HisWebService.asmx"
"""Path of the single SOAP endpoint."""

ZC = {"CHIEF": "1", "ASSOCIATE_CHIEF": "2", "ATTENDING": "3", "RESIDENT": "4"}
XB = {"M": "1", "F": "2", "U": "0", "": ""}
SWXW = {"AM": "1", "PM": "2", "EVE": "3"}
HBDM = {"GENERAL": "1", "EXPERT": "2", "RENOWNED": "3"}
FHMS = {"UNLIMITED": "0", "SESSION": "1", "TIMED": "2", "NUMBERED": "3"}
FB = {"SELF": "1", "EMPLOYEE": "2", "RESIDENT": "3", "PUBLIC": "4"}
ZFFS = {"WECHAT": "1", "ALIPAY": "2", "UNIONPAY": "3", "HOSPITAL": "9"}
ZJLX = {"RESIDENT": "1", "PASSPORT": "2", "OTHER": "9"}
KLX = {"HOSPITAL": "1", "SOCIAL": "2", "HEALTH": "3"}
GHZT = {"HELD": "0", "BOOKED": "1", "CANCELLED": "2", "RELEASED": "3"}
HYZT = {"FREE": "0", "BUSY": "1", "BUSY_TENTATIVE": "2", "BUSY_UNAVAILABLE": "9"}
ERRORS = {
    "INVALID": "1001",
    "NOT_FOUND": "1002",
    "DUPLICATE_REF": "1003",
    "SLOT_FULL": "2001",
    "RULE_VIOLATED": "2002",
    "HOLD_EXPIRED": "2003",
    "AMOUNT_MISMATCH": "2004",
    "CANCEL_DEADLINE_PASSED": "2005",
    "PATIENT_MISMATCH": "2006",
    "BOOKING_CLOSED": "2007",
    "BILL_NOT_PAYABLE": "3001",
    "REFUND_EXCEEDS_CHARGE": "3002",
    "ARCHIVED": "4001",
    "IDENTITY_MISMATCH": "5001",
}
PARAMS = {"name": "XM", "id_number": "ZJHM", "birth_date": "CSRQ", "gender": "XB", "phone": "SJHM"}
"""Neutral names of refusable parameters → this dialect's request elements (sent back as
``ErrorParam`` so the caller knows which one was refused)."""
_LIST_INPUTS = {"CFHLB"}


def _rev(table: dict[str, str], value: str, name: str) -> str:
    for neutral, code in table.items():
        if code == value:
            return neutral
    raise HisError("INVALID", f"参数{name}取值{value!r}无效", param=name)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _to_params(elem: Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in elem:
        name = _local(child.tag)
        if name in _LIST_INPUTS:
            out[name] = [(c.text or "").strip() for c in child]
        elif len(child):
            out[name] = _to_params(child)
        else:
            out[name] = (child.text or "").strip()
    return out


def _build(parent: Element, data: dict[str, Any]) -> None:
    for key, value in data.items():
        node = SubElement(parent, key)
        if isinstance(value, dict):
            _build(node, value)
        elif isinstance(value, list):
            for item in value:
                child = SubElement(node, "Item")
                if isinstance(item, dict):
                    _build(child, item)
                else:
                    child.text = str(item)
        elif isinstance(value, bool):
            node.text = "1" if value else "0"
        elif value is not None:
            node.text = str(value)


class SoapHis(SimBase):
    """A SOAP 1.1 HIS: POST ``/HisWebService.asmx`` with one ``HisCall`` per trade code.

    It can query a booking or charge by the caller's serial number (``JYLSH``) but offers no
    incremental sync: reference data is always read in full.
    """

    dialect: ClassVar[str] = "soap"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._trades: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]], bool]] = {
            "1001": ("list_departments", self._t1001, False),
            "1002": ("list_doctors", self._t1002, False),
            "1003": ("list_schedules", self._t1003, False),
            "1004": ("list_slots", self._t1004, False),
            "1005": ("list_slots_between", self._t1005, False),
            "2001": ("hold", self._t2001, True),
            "2002": ("release_hold", self._t2002, True),
            "2003": ("book", self._t2003, True),
            "2004": ("cancel", self._t2004, True),
            "2005": ("get_appointment", self._t2005, False),
            "2006": ("list_appointments", self._t2006, False),
            "3001": ("list_bills", self._t3001, False),
            "3002": ("quote", self._t3002, True),
            "3003": ("settle", self._t3003, True),
            "3004": ("get_charge", self._t3004, False),
            "3005": ("refund", self._t3005, True),
            "3006": ("get_refund", self._t3006, False),
            "3007": ("daily_ledger", self._t3007, False),
            "4001": ("list_reports", self._t4001, False),
            "4002": ("get_report", self._t4002, False),
            "4003": ("retrieve_archived_report", self._t4003, False),
            "5001": ("register_patient", self._t5001, True),
            "5002": ("find_patient", self._t5002, False),
        }

    def _routes(self) -> list[web.RouteDef]:
        return [web.post(SOAP_PATH, self._handle)]

    # ----------------------------------------------------------------- envelope

    def _envelope(self, build: Callable[[Element], None], status: int = 200) -> web.Response:
        env = Element("soap:Envelope", {"xmlns:soap": SOAP_NS})
        body = SubElement(env, "soap:Body")
        build(body)
        text = tostring(env, encoding="unicode")
        return web.Response(
            status=status,
            text='<?xml version="1.0" encoding="utf-8"?>' + text,
            content_type="text/xml",
            charset="utf-8",
        )

    def _fault(self, status: int, code: str, message: str) -> web.Response:
        def build(body: Element) -> None:
            fault = SubElement(body, "soap:Fault")
            SubElement(fault, "faultcode").text = f"soap:{code}"
            SubElement(fault, "faultstring").text = message

        return self._envelope(build, status)

    def _result(
        self, code: str, message: str, data: dict[str, Any] | None, *, param: str = ""
    ) -> web.Response:
        def build(body: Element) -> None:
            resp = SubElement(body, "HisCallResponse", {"xmlns": WS_NS})
            result = SubElement(resp, "Response")
            SubElement(result, "ResultCode").text = code
            SubElement(result, "ResultMsg").text = message
            if param:
                SubElement(result, "ErrorParam").text = PARAMS.get(param, param)
            if data is not None:
                _build(SubElement(result, "Data"), self.faults.rename_out(data))

        return self._envelope(build)

    def _outage(self) -> web.Response:
        return self._fault(503, "Server", "HIS服务不可用(系统维护)")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            root = SafeET.fromstring(raw)
        except (SafeET.ParseError, DefusedXmlException, ValueError):
            return await self._serve(
                request,
                "invalid",
                lambda: (self._fault(500, "Client", "请求不是合法的XML"), False, "error:Client"),
                outage=self._outage,
            )
        call = root.find(f"{{{SOAP_NS}}}Body/{{{WS_NS}}}HisCall")
        if _local(root.tag) != "Envelope" or call is None:
            return await self._serve(
                request,
                "invalid",
                lambda: (
                    self._fault(500, "Client", "缺少soap:Body/HisCall元素"),
                    False,
                    "error:Client",
                ),
                outage=self._outage,
            )
        # Children may be unqualified or in the method's namespace; match by local name.
        children = {_local(child.tag): child for child in call}
        trade_elem = children.get("TradeCode")
        trade_code = (trade_elem.text or "").strip() if trade_elem is not None else ""
        request_elem = children.get("Request")
        params = _to_params(request_elem) if request_elem is not None else {}
        operation, fn, write = self._trades.get(trade_code, ("invalid", self._unknown, False))

        def work() -> tuple[web.StreamResponse, bool, str]:
            try:
                data = guarded(fn, self.faults.rename_in(params))
            except HisError as err:
                code = ERRORS.get(err.code, "9999")
                return (
                    self._result(code, err.message, None, param=err.param),
                    False,
                    f"error:{code}",
                )
            return self._result("0", "成功", data), write, "ok"

        header = root.find(f"{{{SOAP_NS}}}Header")
        traceparent = next(
            (
                (e.text or "").strip()
                for e in (header.iter() if header is not None else ())
                if _local(e.tag) == "traceparent"
            ),
            "",
        )
        return await self._serve(
            request, operation, work, outage=self._outage, traceparent=traceparent
        )

    def _unknown(self, q: dict[str, Any]) -> dict[str, Any]:
        raise HisError("INVALID", "交易码不存在")

    # ----------------------------------------------------------------- renderers

    def _gh(self, a: Appointment) -> dict[str, Any]:
        sched = self.core.schedules.get(a.schedule_id)
        pay = a.payment
        return {
            "GHID": a.appt_id if a.status in ("BOOKED", "CANCELLED") else "",
            "SDID": a.hold_id,
            "GHZT": GHZT[a.status],
            "BRID": a.patient_id,
            "BRXM": self.core.patients[a.patient_id].name,
            "KSDM": sched.dept_id if sched else "",
            "YSDM": sched.doctor_id if sched else "",
            "PBID": a.schedule_id,
            "HYID": a.slot_id,
            "HBDM": HBDM[sched.clinic_type] if sched else "",
            "JZRQ": fmt_date(a.visit_start.date()),
            "SWXW": SWXW[sched.period] if sched else "",
            "HZSJ": f"{a.visit_start:%H:%M}-{a.visit_end:%H:%M}",
            "JZXH": a.ticket_number,
            "JZDD": sched.location if sched else "",
            "QHMM": a.check_in_code,
            "FB": FB[a.payer],
            "ZJE": fen_to_yuan(a.fee_total),
            "YBZF": fen_to_yuan(a.fee_fund),
            "GRZF": fen_to_yuan(a.fee_cash),
            "ZFFS": ZFFS[pay.method] if pay else "",
            "ZFJYH": pay.transaction_id if pay else "",
            "SHDDH": pay.merchant_order_id if pay else "",
            "SJH": a.receipt_number,
            "SXSJ": fmt_dt(a.hold_expire),
            "TYJZSJ": fmt_dt(sched.start_at) if sched else "",
            "TYSJ": fmt_dt(a.cancel_time),
            "TYYY": a.cancel_reason,
            "TFSJH": a.refund_receipt,
            "JYLSH": a.book_ref or a.hold_ref,
            "CJSJ": fmt_dt(a.create_time),
            "XGSJ": fmt_dt(a.update_time),
        }

    def _js(self, c: Charge) -> dict[str, Any]:
        return {
            "JSID": c.charge_id,
            "BRID": c.patient_id,
            "CFHLB": list(c.bill_ids),
            "FB": FB[c.payer],
            "ZJE": fen_to_yuan(c.total),
            "TCZF": fen_to_yuan(c.fund),
            "ZHZF": fen_to_yuan(c.account),
            "XJZF": fen_to_yuan(c.cash),
            "ZFFS": ZFFS[c.payment.method],
            "ZFJYH": c.payment.transaction_id,
            "SHDDH": c.payment.merchant_order_id,
            "JSZT": {"SETTLED": "1", "PARTIALLY_REFUNDED": "2", "REFUNDED": "3"}[c.status],
            "YTJE": fen_to_yuan(c.refunded_cash),
            "FPH": c.invoice_number,
            "DZXX": c.guidance,
            "JSSJ": fmt_dt(c.settle_time),
            "JYLSH": c.caller_ref,
        }

    def _tf(self, r: Refund) -> dict[str, Any]:
        return {
            "TFID": r.refund_id,
            "JSID": r.charge_id,
            "TFZT": "1",
            "TFJE": fen_to_yuan(r.cash),
            "TFZJE": fen_to_yuan(r.total),
            "TFYY": r.reason,
            "SQSJ": fmt_dt(r.create_time),
            "WCSJ": fmt_dt(r.complete_time),
            "JYLSH": r.caller_ref,
        }

    def _br(self, p: Patient) -> dict[str, Any]:
        return {
            "BRID": p.patient_id,
            "XM": p.name,
            "XB": XB[p.gender],
            "CSRQ": fmt_date(p.birth_date),
            "ZJLX": ZJLX[p.id_type],
            "ZJHM": p.id_number,
            "SJHM": p.phone,
            "DZ": p.address,
            "MZ": p.ethnicity,
            "JZKH": p.card_number,
            "BDKLB": [{"KLX": KLX.get(t, "9"), "KH": n} for t, n in p.bound_cards],
            "FB": FB[p.payer],
            "YBH": p.insurance_number,
            "JDSJ": fmt_dt(p.create_time),
        }

    def _bg(self, r: Report) -> dict[str, Any]:
        return {
            "BGID": r.report_id,
            "BGLX": "1" if r.kind == "LAB" else "2",
            "BGMC": r.title,
            "BRID": r.patient_id,
            "BGZT": "1" if r.status == "FINAL" else "0",
            "GDBZ": r.archived,
            "KSDM": r.dept_id,
            "GHID": r.appt_id,
            "BGSJ": fmt_dt(r.issue_time),
            "YJQBGSJ": fmt_dt(r.expected_time),
            "YCBZ": r.has_abnormal,
        }

    def _pay(self, q: dict[str, Any]) -> Payment | None:
        method = opt(q, "ZFFS")
        if not method:
            return None
        paid = opt(q, "ZFSJ")
        return Payment(
            _rev(ZFFS, method, "ZFFS"),
            opt(q, "ZFJYH"),
            opt(q, "SHDDH"),
            yuan_to_fen(req(q, "ZFJE"), "ZFJE") if method != "9" else 0,
            parse_dt(paid, "ZFSJ") if paid else None,
        )

    def _fb(self, q: dict[str, Any]) -> str:
        return _rev(FB, opt(q, "FB", "1"), "FB")

    def _bills_in(self, q: dict[str, Any]) -> list[str]:
        nos = q.get("CFHLB")
        if not isinstance(nos, list) or not nos or not all(nos):
            raise HisError("INVALID", "参数CFHLB(处方号列表)不能为空")
        return list(nos)

    # ----------------------------------------------------------------- trade codes

    def _t1001(self, q: dict[str, Any]) -> dict[str, Any]:
        return {
            "KSLB": [
                {
                    "KSDM": d.dept_id,
                    "KSMC": d.name,
                    "SJKSDM": d.parent_id,
                    "BZKMDM": d.subject_code,
                    "KSWZ": d.location,
                    "KSJJ": d.description,
                    "SFYY": d.bookable,
                    "PXH": d.order,
                }
                for d in self.core.list_departments()
            ]
        }

    def _t1002(self, q: dict[str, Any]) -> dict[str, Any]:
        return {
            "YSLB": [
                {
                    "YSDM": d.doctor_id,
                    "YSXM": d.name,
                    "ZCDM": ZC[d.title],
                    "ZCMC": d.title_text,
                    "KSDM": ",".join(d.dept_ids),
                    "XB": XB[d.gender],
                    "SC": d.specialty,
                    "YSJJ": d.introduction,
                    "ZP": d.photo_url,
                    "SFYY": d.bookable,
                }
                for d in self.core.list_doctors(opt(q, "KSDM"))
            ]
        }

    def _t1003(self, q: dict[str, Any]) -> dict[str, Any]:
        start, end = opt(q, "KSRQ"), opt(q, "JSRQ")
        schedules = self.core.list_schedules(
            dept_id=opt(q, "KSDM"),
            doctor_id=opt(q, "YSDM"),
            start=parse_date(start, "KSRQ") if start else None,
            end=parse_date(end, "JSRQ") if end else None,
        )
        return {
            "PBLB": [
                {
                    "PBID": s.schedule_id,
                    "KSDM": s.dept_id,
                    "YSDM": s.doctor_id,
                    "JZRQ": fmt_date(s.date),
                    "SWXW": SWXW[s.period],
                    "KSSJ": fmt_time(s.start),
                    "JSSJ": fmt_time(s.end),
                    "JZDD": s.location,
                    "HBDM": HBDM[s.clinic_type],
                    "GHF": fen_to_yuan(s.reg_fee),
                    "ZCF": fen_to_yuan(s.diag_fee),
                    "ZJE": fen_to_yuan(s.fee),
                    "FHMS": FHMS[s.slot_mode],
                    "ZHS": self.core.schedule_capacity(s),
                    "SYHS": self.core.schedule_remaining(s),
                    "PBZT": "2" if s.suspended else "1",
                    "TZYY": s.suspend_reason,
                    "NLXX": s.min_age,
                    "NLSX": s.max_age,
                    "XBXZ": XB[s.required_gender],
                    "YYJZSJ": fmt_dt(s.end_at),
                    "TYJZSJ": fmt_dt(s.start_at),
                }
                for s in schedules
            ]
        }

    def _slot_item(self, s: Slot) -> dict[str, Any]:
        state = self.core.slot_state(s)
        return {
            "HYID": s.slot_id,
            "PBID": s.schedule_id,
            "XH": s.ticket_number,
            "KSSJ": fmt_dt(s.start),
            "JSSJ": fmt_dt(s.end),
            "ZHS": s.capacity,
            "SYHS": state.remaining,
            "SDS": state.held,
            "ZT": HYZT[state.status],
        }

    def _t1004(self, q: dict[str, Any]) -> dict[str, Any]:
        return {"HYLB": [self._slot_item(s) for s in self.core.slots_of(req(q, "PBID"))]}

    def _t1005(self, q: dict[str, Any]) -> dict[str, Any]:
        end = opt(q, "JSRQ")
        slots = self.core.slots_between(
            parse_date(req(q, "KSRQ"), "KSRQ"), parse_date(end, "JSRQ") if end else None
        )
        return {"HYLB": [self._slot_item(s) for s in slots]}

    def _t2001(self, q: dict[str, Any]) -> dict[str, Any]:
        minutes = opt(q, "SDSC", "0")
        if not minutes.isdigit():
            raise HisError("INVALID", "参数SDSC(锁定时长)须为整数分钟")
        appt = self.core.hold(
            req(q, "HYID"),
            req(q, "BRID"),
            payer=self._fb(q),
            seconds=int(minutes) * 60,
            ref=opt(q, "JYLSH"),
        )
        return self._gh(appt)

    def _t2002(self, q: dict[str, Any]) -> dict[str, Any]:
        return self._gh(self.core.release(req(q, "SDID")))

    def _t2003(self, q: dict[str, Any]) -> dict[str, Any]:
        appt = self.core.book(
            req(q, "BRID"),
            hold_id=opt(q, "SDID"),
            slot_id=opt(q, "HYID"),
            payer=self._fb(q),
            payment=self._pay(q),
            ref=opt(q, "JYLSH"),
        )
        return self._gh(appt)

    def _t2004(self, q: dict[str, Any]) -> dict[str, Any]:
        appt = self.core.cancel(
            req(q, "GHID"), req(q, "BRID"), reason=opt(q, "TYYY"), ref=opt(q, "JYLSH")
        )
        return self._gh(appt)

    def _t2005(self, q: dict[str, Any]) -> dict[str, Any]:
        serial = opt(q, "JYLSH")
        if serial:
            return self._gh(self.core.appointment_by_ref(serial))
        return self._gh(self.core.find_appointment(req(q, "GHID")))

    def _t2006(self, q: dict[str, Any]) -> dict[str, Any]:
        return {"GHLB": [self._gh(a) for a in self.core.patient_appointments(req(q, "BRID"))]}

    def _t3001(self, q: dict[str, Any]) -> dict[str, Any]:
        return {
            "CFLB": [
                {
                    "CFH": b.bill_id,
                    "GHID": b.appt_id,
                    "KSDM": b.dept_id,
                    "YSDM": b.doctor_id,
                    "CFMC": b.title,
                    "KDSJ": fmt_dt(b.order_time),
                    "ZJE": fen_to_yuan(b.total),
                    "MXLB": [
                        {
                            "XMDM": i.code,
                            "XMMC": i.name,
                            "FYLB": i.category,
                            "SL": i.quantity,
                            "DW": i.unit,
                            "DJ": fen_to_yuan(i.unit_price),
                            "JE": fen_to_yuan(i.amount),
                        }
                        for i in b.items
                    ],
                }
                for b in self.core.unpaid_bills(req(q, "BRID"))
            ]
        }

    def _t3002(self, q: dict[str, Any]) -> dict[str, Any]:
        quote = self.core.quote(req(q, "BRID"), self._bills_in(q), self._fb(q))
        return {
            "YJSID": quote.quote_id,
            "ZJE": fen_to_yuan(quote.total),
            "TCZF": fen_to_yuan(quote.fund),
            "ZHZF": fen_to_yuan(quote.account),
            "XJZF": fen_to_yuan(quote.cash),
            "YXQ": fmt_dt(quote.expire_time),
        }

    def _t3003(self, q: dict[str, Any]) -> dict[str, Any]:
        payment = self._pay(q)
        if payment is None:
            raise HisError("INVALID", "缺少必填参数ZFFS")
        charge = self.core.settle(
            req(q, "BRID"), self._bills_in(q), payment, payer=self._fb(q), ref=opt(q, "JYLSH")
        )
        return self._js(charge)

    def _t3004(self, q: dict[str, Any]) -> dict[str, Any]:
        serial = opt(q, "JYLSH")
        if serial:
            return self._js(self.core.charge_by_ref(serial))
        return self._js(self.core.charge(req(q, "JSID")))

    def _t3005(self, q: dict[str, Any]) -> dict[str, Any]:
        amount = opt(q, "TFJE")
        refund = self.core.refund(
            req(q, "JSID"),
            amount=yuan_to_fen(amount, "TFJE") if amount else None,
            reason=opt(q, "TFYY"),
            ref=opt(q, "JYLSH"),
        )
        return self._tf(refund)

    def _t3006(self, q: dict[str, Any]) -> dict[str, Any]:
        serial = opt(q, "JYLSH")
        if serial:
            return self._tf(self.core.refund_by_ref(serial))
        return self._tf(self.core.get_refund(req(q, "TFID")))

    def _t3007(self, q: dict[str, Any]) -> dict[str, Any]:
        day = parse_date(req(q, "RQ"), "RQ")
        kinds = {"REG": "1", "REG_REFUND": "2", "CHARGE": "3", "CHARGE_REFUND": "4"}
        return {
            "RQ": fmt_date(day),
            "RJBZ": day < self.core.now().date(),
            "MXLB": [
                {
                    "YWLX": kinds[line.kind],
                    "SJH": line.receipt,
                    "BRID": line.patient_id,
                    "GHID": line.appt_id,
                    "FB": FB[line.payer],
                    "ZJE": fen_to_yuan(line.total),
                    "XJZF": fen_to_yuan(line.cash),
                    "ZFFS": ZFFS[line.method],
                    "ZFJYH": line.transaction_id,
                    "YWSJ": fmt_dt(line.time),
                }
                for line in self.core.ledger(day)
            ],
        }

    def _t4001(self, q: dict[str, Any]) -> dict[str, Any]:
        return {"BGLB": [self._bg(r) for r in self.core.patient_reports(req(q, "BRID"))]}

    def _t4002(self, q: dict[str, Any]) -> dict[str, Any]:
        return self._bg_full(self.core.read_report(req(q, "BGID"), req(q, "BRID")))

    def _t4003(self, q: dict[str, Any]) -> dict[str, Any]:
        return self._bg_full(self.core.retrieve_archived(req(q, "BGID"), req(q, "BRID")))

    def _bg_full(self, r: Report) -> dict[str, Any]:
        out = self._bg(r)
        out.update(
            BRXM=self.core.patients[r.patient_id].name,
            LCZD=r.diagnosis,
            BGYS=r.reporter,
            SHYS=r.verifier,
        )
        if r.lab is not None:
            out.update(
                BBLX=r.lab.specimen,
                CYSJ=fmt_dt(r.lab.collect_time),
                JSSJ=fmt_dt(r.lab.receive_time),
                BZ=r.lab.comment,
                JGLB=[
                    {
                        "XMDM": o.code,
                        "XMMC": o.name,
                        "YWSX": o.abbreviation,
                        "JG": o.value,
                        "DW": o.unit,
                        "CKFW": o.range_text,
                        "CKXX": o.low,
                        "CKSX": o.high,
                        "YCBZ": o.flag,
                        "XH": o.order,
                    }
                    for o in r.lab.observations
                ],
            )
        if r.imaging is not None:
            out.update(
                JCLX=r.imaging.modality,
                JCBW=r.imaging.body_site,
                JCFF=r.imaging.method,
                JCSJ=r.imaging.findings,
                ZDYJ=r.imaging.conclusion,
                JCRQ=fmt_dt(r.imaging.study_time),
                STUDYUID=r.imaging.study_uid,
            )
        return out

    def _t5001(self, q: dict[str, Any]) -> dict[str, Any]:
        birthday = opt(q, "CSRQ")
        patient, created = self.core.register_patient(
            name=req(q, "XM"),
            gender={"1": "M", "2": "F"}.get(opt(q, "XB"), ""),
            birth_date=parse_date(birthday, "CSRQ") if birthday else None,
            id_type=_rev(ZJLX, opt(q, "ZJLX", "1"), "ZJLX"),
            id_number=req(q, "ZJHM"),
            phone=opt(q, "SJHM"),
            address=opt(q, "DZ"),
            ethnicity=opt(q, "MZ"),
            card_type=_rev(KLX, opt(q, "KLX", "1"), "KLX"),
            card_number=opt(q, "KH"),
            payer=self._fb(q),
        )
        return {"XJBZ": created, "BRXX": self._br(patient)}

    def _t5002(self, q: dict[str, Any]) -> dict[str, Any]:
        found = self.core.find_patients(
            id_number=opt(q, "ZJHM"),
            card_number=opt(q, "KH"),
            phone=opt(q, "SJHM"),
            name=opt(q, "XM"),
        )
        return {"BRLB": [self._br(p) for p in found]}
