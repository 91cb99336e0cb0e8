"""The REST/JSON HIS ("YunKang HIS OpenAPI v3"): camelCase JSON, yuan strings."""

# Chinese vendor texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

from tools.his_sim._base import SimBase, guarded
from tools.his_sim._model import (
    Appointment,
    Bill,
    Charge,
    Department,
    Doctor,
    HisError,
    Patient,
    Payment,
    Refund,
    Report,
    Schedule,
    Slot,
)
from tools.his_sim._wire import (
    fen_to_yuan,
    fmt_date,
    fmt_dt,
    fmt_dt_us,
    fmt_time,
    opt,
    parse_date,
    parse_dt,
    req,
    yuan_to_fen,
)

__all__ = ["RestHis"]

P = "/openapi/v3"
TITLE_CODES = {"CHIEF": "231", "ASSOCIATE_CHIEF": "232", "ATTENDING": "233", "RESIDENT": "234"}
SEX_CODES = {"M": "1", "F": "2", "U": "0", "": ""}
FEE_TYPES = {"SELF": "01", "EMPLOYEE": "02", "RESIDENT": "03", "PUBLIC": "04"}
PAY_MODES = {"WECHAT": "WX", "ALIPAY": "ZFB", "UNIONPAY": "YL", "HOSPITAL": "XJ"}
REGISTER_TYPES = {"GENERAL": "PT", "EXPERT": "ZJ", "RENOWNED": "MZJ"}
SOURCE_MODES = {
    "UNLIMITED": "UNLIMITED",
    "SESSION": "HALF_DAY",
    "TIMED": "TIME",
    "NUMBERED": "NUMBER",
}
SOURCE_STATUS = {"FREE": "1", "BUSY": "0", "BUSY_TENTATIVE": "2", "BUSY_UNAVAILABLE": "9"}
REG_STATUS = {
    "HELD": "LOCKED",
    "BOOKED": "BOOKED",
    "CANCELLED": "CANCELLED",
    "RELEASED": "UNLOCKED",
}
CERT_TYPES = {"RESIDENT": "01", "PASSPORT": "03", "OTHER": "99"}
CARD_TYPES = {"HOSPITAL": "1", "SOCIAL": "2", "HEALTH": "3"}
# neutral error code -> (HTTP status, vendor code)
ERRORS = {
    "INVALID": (400, 40001),
    "NOT_FOUND": (404, 40401),
    "DUPLICATE_REF": (409, 40901),
    "SLOT_FULL": (422, 42201),
    "RULE_VIOLATED": (422, 42202),
    "HOLD_EXPIRED": (422, 42203),
    "AMOUNT_MISMATCH": (422, 42204),
    "BILL_NOT_PAYABLE": (422, 42205),
    "REFUND_EXCEEDS_CHARGE": (422, 42206),
    "CANCEL_DEADLINE_PASSED": (422, 42207),
    "IDENTITY_MISMATCH": (422, 42208),
    "ARCHIVED": (422, 42209),
    "PATIENT_MISMATCH": (422, 42210),
    "BOOKING_CLOSED": (422, 42211),
}
PARAMS = {
    "name": "name",
    "id_number": "certNo",
    "birth_date": "birthday",
    "gender": "sex",
    "phone": "mobile",
}
"""Neutral names of refusable parameters → this dialect's request keys (sent back in the
error envelope's ``data.param`` so the caller knows which one was refused)."""


def _reverse(table: Mapping[str, str], value: str, name: str) -> str:
    for neutral, code in table.items():
        if code == value:
            return neutral
    raise HisError("INVALID", f"参数{name}取值{value!r}无效", param=name)


class RestHis(SimBase):
    """A REST/JSON HIS with incremental sync and query by the caller's order number.

    Every answer is ``{"code": 0, "message": "success", "data": ...}``; errors carry a
    non-zero ``code`` (see README) with a matching HTTP status.
    """

    dialect: ClassVar[str] = "rest"

    def _routes(self) -> list[web.RouteDef]:
        h = self._handler
        return [
            web.get(f"{P}/depts", h("list_departments", self._depts)),
            web.get(f"{P}/doctors", h("list_doctors", self._doctors)),
            web.get(f"{P}/schedules", h("list_schedules", self._schedules)),
            web.get(f"{P}/schedules/{{scheduleId}}/sources", h("list_slots", self._sources)),
            web.get(f"{P}/sources", h("list_slots_between", self._sources_between)),
            web.get(f"{P}/changes", h("get_changes", self._changes)),
            web.post(f"{P}/registrations/lock", h("hold", self._lock, write=True)),
            web.post(f"{P}/registrations/unlock", h("release_hold", self._unlock, write=True)),
            web.post(f"{P}/registrations", h("book", self._register, write=True)),
            web.post(f"{P}/registrations/{{regId}}/cancel", h("cancel", self._cancel, write=True)),
            web.get(f"{P}/registrations/{{regId}}", h("get_appointment", self._get_reg)),
            web.get(f"{P}/registrations", h("list_appointments", self._list_regs)),
            web.get(f"{P}/patients/{{patientId}}/unpaid-bills", h("list_bills", self._bills)),
            web.post(f"{P}/settlements/preview", h("quote", self._preview, write=True)),
            web.post(f"{P}/settlements", h("settle", self._settle, write=True)),
            web.get(f"{P}/settlements/{{settleId}}", h("get_charge", self._get_settle)),
            web.get(f"{P}/settlements", h("get_charge", self._find_settle)),
            web.post(f"{P}/settlements/{{settleId}}/refund", h("refund", self._refund, write=True)),
            web.get(f"{P}/refunds/{{refundId}}", h("get_refund", self._get_refund)),
            web.get(f"{P}/refunds", h("get_refund", self._find_refund)),
            web.get(f"{P}/ledger", h("daily_ledger", self._ledger)),
            web.get(f"{P}/patients/{{patientId}}/reports", h("list_reports", self._reports)),
            web.get(f"{P}/reports/{{reportId}}", h("get_report", self._report)),
            web.get(
                f"{P}/archive/reports/{{reportId}}",
                h("retrieve_archived_report", self._archived_report),
            ),
            web.post(f"{P}/patients", h("register_patient", self._create_patient, write=True)),
            web.get(f"{P}/patients", h("find_patient", self._find_patients)),
        ]

    # ----------------------------------------------------------------- plumbing

    def _send(self, status: int, body: dict[str, Any]) -> web.Response:
        return web.Response(
            status=status,
            text=json.dumps(self.faults.rename_out(body), ensure_ascii=False),
            content_type="application/json",
        )

    def _outage(self) -> web.Response:
        return self._send(503, {"code": 50301, "message": "系统维护中，请稍后再试", "data": None})

    def _handler(
        self, operation: str, fn: Callable[[dict[str, Any]], Any], *, write: bool = False
    ) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read() if request.method == "POST" else b""

            def work() -> tuple[web.StreamResponse, bool, str]:
                try:
                    body: Any = {}
                    if raw:
                        try:
                            body = json.loads(raw)
                        except ValueError as err:
                            raise HisError("INVALID", "请求体不是合法的JSON") from err
                        if not isinstance(body, dict):
                            raise HisError("INVALID", "请求体须为JSON对象")
                    params = self.faults.rename_in({**request.query, **body, **request.match_info})
                    data = guarded(fn, params)
                except HisError as err:
                    status, code = ERRORS.get(err.code, (500, 50000))
                    refused = {"param": PARAMS.get(err.param, err.param)} if err.param else None
                    return (
                        self._send(status, {"code": code, "message": err.message, "data": refused}),
                        False,
                        f"error:{code}",
                    )
                return self._send(200, {"code": 0, "message": "success", "data": data}), write, "ok"

            return await self._serve(request, operation, work, outage=self._outage)

        return handle

    # ----------------------------------------------------------------- renderers

    def _dept(self, d: Department) -> dict[str, Any]:
        return {
            "deptCode": d.dept_id,
            "deptName": d.name,
            "parentDeptCode": d.parent_id,
            "subjectCode": d.subject_code,
            "deptLocation": d.location,
            "deptIntro": d.description,
            "onlineBookable": d.bookable,
            "sortNo": d.order,
            "lastModified": fmt_dt_us(d.update_time),
        }

    def _doctor(self, d: Doctor) -> dict[str, Any]:
        return {
            "doctorCode": d.doctor_id,
            "doctorName": d.name,
            "titleCode": TITLE_CODES[d.title],
            "titleName": d.title_text,
            "deptCodes": list(d.dept_ids),
            "sex": SEX_CODES[d.gender],
            "expertise": d.specialty,
            "intro": d.introduction,
            "photoUrl": d.photo_url,
            "onlineBookable": d.bookable,
            "lastModified": fmt_dt_us(d.update_time),
        }

    def _schedule(self, s: Schedule) -> dict[str, Any]:
        return {
            "scheduleId": s.schedule_id,
            "deptCode": s.dept_id,
            "doctorCode": s.doctor_id,
            "visitDate": fmt_date(s.date),
            "timeFlag": s.period,
            "startTime": fmt_time(s.start),
            "endTime": fmt_time(s.end),
            "clinicRoom": s.location,
            "registerType": REGISTER_TYPES[s.clinic_type],
            "regFee": fen_to_yuan(s.reg_fee),
            "diagFee": fen_to_yuan(s.diag_fee),
            "totalFee": fen_to_yuan(s.fee),
            "sourceMode": SOURCE_MODES[s.slot_mode],
            "totalNum": self.core.schedule_capacity(s),
            "leftNum": self.core.schedule_remaining(s),
            "scheduleStatus": "0" if s.suspended else "1",
            "stopReason": s.suspend_reason,
            "minAge": s.min_age,
            "maxAge": s.max_age,
            "sexLimit": SEX_CODES[s.required_gender],
            "bookDeadline": fmt_dt(s.end_at),
            "cancelDeadline": fmt_dt(s.start_at),
            "lastModified": fmt_dt_us(s.update_time),
        }

    def _source(self, s: Slot) -> dict[str, Any]:
        state = self.core.slot_state(s)
        return {
            "sourceId": s.slot_id,
            "scheduleId": s.schedule_id,
            "seqNo": s.ticket_number,
            "beginTime": fmt_dt(s.start),
            "endTime": fmt_dt(s.end),
            "totalNum": s.capacity,
            "leftNum": state.remaining,
            "lockedNum": state.held,
            "status": SOURCE_STATUS[state.status],
            "lastModified": fmt_dt_us(s.update_time),
        }

    def _payment(self, p: Payment | None) -> dict[str, Any] | None:
        if p is None:
            return None
        return {
            "payMode": PAY_MODES[p.method],
            "tradeNo": p.transaction_id,
            "merchantOrderNo": p.merchant_order_id,
            "payAmount": fen_to_yuan(p.amount),
            "payTime": fmt_dt(p.paid_time),
        }

    def _reg(self, a: Appointment) -> dict[str, Any]:
        sched = self.core.schedules.get(a.schedule_id)
        patient = self.core.patients[a.patient_id]
        return {
            "regId": a.appt_id if a.status in ("BOOKED", "CANCELLED") else "",
            "lockId": a.hold_id,
            "regStatus": REG_STATUS[a.status],
            "patientId": a.patient_id,
            "patientName": patient.name,
            "deptCode": sched.dept_id if sched else "",
            "doctorCode": sched.doctor_id if sched else "",
            "scheduleId": a.schedule_id,
            "sourceId": a.slot_id,
            "registerType": REGISTER_TYPES[sched.clinic_type] if sched else "",
            "visitDate": fmt_date(a.visit_start.date()),
            "timeFlag": sched.period if sched else "",
            "visitBeginTime": fmt_dt(a.visit_start),
            "visitEndTime": fmt_dt(a.visit_end),
            "seqNo": a.ticket_number,
            "clinicRoom": sched.location if sched else "",
            "takeNoPassword": a.check_in_code,
            "feeType": FEE_TYPES[a.payer],
            "totalFee": fen_to_yuan(a.fee_total),
            "insuranceFee": fen_to_yuan(a.fee_fund),
            "selfFee": fen_to_yuan(a.fee_cash),
            "payment": self._payment(a.payment),
            "receiptNo": a.receipt_number,
            "lockExpireTime": fmt_dt(a.hold_expire),
            "cancelDeadline": fmt_dt(sched.start_at) if sched else "",
            "cancelTime": fmt_dt(a.cancel_time),
            "cancelReason": a.cancel_reason,
            "refundReceiptNo": a.refund_receipt,
            "orderNo": a.book_ref or a.hold_ref,
            "createTime": fmt_dt(a.create_time),
            "updateTime": fmt_dt(a.update_time),
        }

    def _bill(self, b: Bill) -> dict[str, Any]:
        return {
            "billNo": b.bill_id,
            "regId": b.appt_id,
            "deptCode": b.dept_id,
            "doctorCode": b.doctor_id,
            "billTitle": b.title,
            "orderTime": fmt_dt(b.order_time),
            "totalFee": fen_to_yuan(b.total),
            "items": [
                {
                    "itemCode": i.code,
                    "itemName": i.name,
                    "feeCategory": i.category,
                    "quantity": i.quantity,
                    "unit": i.unit,
                    "price": fen_to_yuan(i.unit_price),
                    "amount": fen_to_yuan(i.amount),
                }
                for i in b.items
            ],
        }

    def _settlement(self, c: Charge) -> dict[str, Any]:
        return {
            "settleId": c.charge_id,
            "patientId": c.patient_id,
            "billNos": list(c.bill_ids),
            "feeType": FEE_TYPES[c.payer],
            "totalFee": fen_to_yuan(c.total),
            "fundPay": fen_to_yuan(c.fund),
            "accountPay": fen_to_yuan(c.account),
            "cashPay": fen_to_yuan(c.cash),
            "payment": self._payment(c.payment),
            "settleStatus": {"SETTLED": "1", "PARTIALLY_REFUNDED": "2", "REFUNDED": "3"}[c.status],
            "refundedAmount": fen_to_yuan(c.refunded_cash),
            "invoiceNo": c.invoice_number,
            "guide": c.guidance,
            "settleTime": fmt_dt(c.settle_time),
            "orderNo": c.caller_ref,
        }

    def _refund_out(self, r: Refund) -> dict[str, Any]:
        return {
            "refundId": r.refund_id,
            "settleId": r.charge_id,
            "refundStatus": "SUCCESS",
            "refundAmount": fen_to_yuan(r.cash),
            "refundTotal": fen_to_yuan(r.total),
            "reason": r.reason,
            "applyTime": fmt_dt(r.create_time),
            "finishTime": fmt_dt(r.complete_time),
            "orderNo": r.caller_ref,
        }

    def _report_head(self, r: Report) -> dict[str, Any]:
        return {
            "reportId": r.report_id,
            "reportType": "LIS" if r.kind == "LAB" else "PACS",
            "reportName": r.title,
            "patientId": r.patient_id,
            "reportStatus": "FINAL" if r.status == "FINAL" else "PENDING",
            "archived": r.archived,
            "deptCode": r.dept_id,
            "regId": r.appt_id,
            "reportTime": fmt_dt(r.issue_time),
            "expectedTime": fmt_dt(r.expected_time),
            "abnormal": r.has_abnormal,
        }

    def _patient(self, p: Patient) -> dict[str, Any]:
        return {
            "patientId": p.patient_id,
            "name": p.name,
            "sex": SEX_CODES[p.gender],
            "birthday": fmt_date(p.birth_date),
            "certType": CERT_TYPES[p.id_type],
            "certNo": p.id_number,
            "mobile": p.phone,
            "address": p.address,
            "nation": p.ethnicity,
            "cardNo": p.card_number,
            "boundCards": [
                {"cardType": CARD_TYPES.get(t, "9"), "cardNo": n} for t, n in p.bound_cards
            ],
            "feeType": FEE_TYPES[p.payer],
            "insuranceNo": p.insurance_number,
            "createTime": fmt_dt(p.create_time),
            "updateTime": fmt_dt(p.update_time),
        }

    # ----------------------------------------------------------------- operations

    def _depts(self, q: dict[str, Any]) -> Any:
        return [self._dept(d) for d in self.core.list_departments()]

    def _doctors(self, q: dict[str, Any]) -> Any:
        return [self._doctor(d) for d in self.core.list_doctors(opt(q, "deptCode"))]

    def _schedules(self, q: dict[str, Any]) -> Any:
        begin = opt(q, "beginDate")
        end = opt(q, "endDate")
        return [
            self._schedule(s)
            for s in self.core.list_schedules(
                dept_id=opt(q, "deptCode"),
                doctor_id=opt(q, "doctorCode"),
                start=parse_date(begin, "beginDate") if begin else None,
                end=parse_date(end, "endDate") if end else None,
            )
        ]

    def _sources(self, q: dict[str, Any]) -> Any:
        return [self._source(s) for s in self.core.slots_of(req(q, "scheduleId"))]

    def _sources_between(self, q: dict[str, Any]) -> Any:
        end = opt(q, "endDate")
        return [
            self._source(s)
            for s in self.core.slots_between(
                parse_date(req(q, "beginDate"), "beginDate"),
                parse_date(end, "endDate") if end else None,
            )
        ]

    def _changes(self, q: dict[str, Any]) -> Any:
        since = opt(q, "since")
        changes = self.core.changes_since(parse_dt(since, "since") if since else None)
        kinds = {"SCHEDULE": "schedule", "SLOT": "source", "DEPT": "dept", "DOCTOR": "doctor"}
        return {
            "depts": [self._dept(d) for d in changes.departments],
            "doctors": [self._doctor(d) for d in changes.doctors],
            "schedules": [self._schedule(s) for s in changes.schedules],
            "sources": [self._source(s) for s in changes.slots],
            "deleted": [
                {"type": kinds[k], "id": i, "deleteTime": fmt_dt_us(t)}
                for k, i, t in changes.deleted
            ],
            "serverTime": fmt_dt_us(changes.server_time),
        }

    def _pay(self, q: dict[str, Any]) -> Payment | None:
        raw = q.get("payment")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise HisError("INVALID", "参数payment须为对象")
        paid = opt(raw, "payTime")
        return Payment(
            _reverse(PAY_MODES, req(raw, "payMode"), "payment.payMode"),
            opt(raw, "tradeNo"),
            opt(raw, "merchantOrderNo"),
            yuan_to_fen(req(raw, "payAmount"), "payment.payAmount"),
            parse_dt(paid, "payment.payTime") if paid else None,
        )

    def _fee_type(self, q: dict[str, Any]) -> str:
        return _reverse(FEE_TYPES, opt(q, "feeType", "01"), "feeType")

    def _lock(self, q: dict[str, Any]) -> Any:
        minutes = opt(q, "lockMinutes", "0")
        if not minutes.isdigit():
            raise HisError("INVALID", "参数lockMinutes须为整数")
        appt = self.core.hold(
            req(q, "sourceId"),
            req(q, "patientId"),
            payer=self._fee_type(q),
            seconds=int(minutes) * 60,
            ref=opt(q, "orderNo"),
        )
        return self._reg(appt)

    def _unlock(self, q: dict[str, Any]) -> Any:
        return self._reg(self.core.release(req(q, "lockId")))

    def _register(self, q: dict[str, Any]) -> Any:
        appt = self.core.book(
            req(q, "patientId"),
            hold_id=opt(q, "lockId"),
            slot_id=opt(q, "sourceId"),
            payer=self._fee_type(q),
            payment=self._pay(q),
            ref=opt(q, "orderNo"),
        )
        return self._reg(appt)

    def _cancel(self, q: dict[str, Any]) -> Any:
        appt = self.core.cancel(
            req(q, "regId"), req(q, "patientId"), reason=opt(q, "reason"), ref=opt(q, "orderNo")
        )
        return self._reg(appt)

    def _get_reg(self, q: dict[str, Any]) -> Any:
        return self._reg(self.core.find_appointment(req(q, "regId")))

    def _list_regs(self, q: dict[str, Any]) -> Any:
        order_no = opt(q, "orderNo")
        if order_no:
            return [self._reg(self.core.appointment_by_ref(order_no))]
        return [self._reg(a) for a in self.core.patient_appointments(req(q, "patientId"))]

    def _bills(self, q: dict[str, Any]) -> Any:
        return [self._bill(b) for b in self.core.unpaid_bills(req(q, "patientId"))]

    def _bill_nos(self, q: dict[str, Any]) -> list[str]:
        nos = q.get("billNos")
        if not isinstance(nos, list) or not nos or not all(isinstance(n, str) for n in nos):
            raise HisError("INVALID", "参数billNos须为非空字符串数组")
        return list(nos)

    def _preview(self, q: dict[str, Any]) -> Any:
        quote = self.core.quote(req(q, "patientId"), self._bill_nos(q), self._fee_type(q))
        return {
            "previewId": quote.quote_id,
            "totalFee": fen_to_yuan(quote.total),
            "fundPay": fen_to_yuan(quote.fund),
            "accountPay": fen_to_yuan(quote.account),
            "cashPay": fen_to_yuan(quote.cash),
            "expireTime": fmt_dt(quote.expire_time),
        }

    def _settle(self, q: dict[str, Any]) -> Any:
        payment = self._pay(q)
        if payment is None:
            raise HisError("INVALID", "缺少必填参数payment")
        charge = self.core.settle(
            req(q, "patientId"),
            self._bill_nos(q),
            payment,
            payer=self._fee_type(q),
            ref=opt(q, "orderNo"),
        )
        return self._settlement(charge)

    def _get_settle(self, q: dict[str, Any]) -> Any:
        return self._settlement(self.core.charge(req(q, "settleId")))

    def _find_settle(self, q: dict[str, Any]) -> Any:
        return self._settlement(self.core.charge_by_ref(req(q, "orderNo")))

    def _refund(self, q: dict[str, Any]) -> Any:
        amount = opt(q, "refundAmount")
        refund = self.core.refund(
            req(q, "settleId"),
            amount=yuan_to_fen(amount, "refundAmount") if amount else None,
            reason=opt(q, "reason"),
            ref=opt(q, "orderNo"),
        )
        return self._refund_out(refund)

    def _get_refund(self, q: dict[str, Any]) -> Any:
        return self._refund_out(self.core.get_refund(req(q, "refundId")))

    def _find_refund(self, q: dict[str, Any]) -> Any:
        return self._refund_out(self.core.refund_by_ref(req(q, "orderNo")))

    def _ledger(self, q: dict[str, Any]) -> Any:
        day = parse_date(req(q, "date"), "date")
        lines = self.core.ledger(day)
        kinds = {"REG": "GH", "REG_REFUND": "TH", "CHARGE": "JF", "CHARGE_REFUND": "TF"}
        return {
            "date": fmt_date(day),
            "closed": day < self.core.now().date(),
            "records": [
                {
                    "bizType": kinds[line.kind],
                    "receiptNo": line.receipt,
                    "patientId": line.patient_id,
                    "regId": line.appt_id,
                    "feeType": FEE_TYPES[line.payer],
                    "totalFee": fen_to_yuan(line.total),
                    "cashFee": fen_to_yuan(line.cash),
                    "payMode": PAY_MODES[line.method],
                    "tradeNo": line.transaction_id,
                    "bizTime": fmt_dt(line.time),
                }
                for line in lines
            ],
        }

    def _reports(self, q: dict[str, Any]) -> Any:
        return [self._report_head(r) for r in self.core.patient_reports(req(q, "patientId"))]

    def _report(self, q: dict[str, Any]) -> Any:
        return self._report_full(self.core.read_report(req(q, "reportId"), req(q, "patientId")))

    def _archived_report(self, q: dict[str, Any]) -> Any:
        r = self.core.retrieve_archived(req(q, "reportId"), req(q, "patientId"))
        return self._report_full(r)

    def _report_full(self, r: Report) -> Any:
        out = self._report_head(r)
        out.update(
            patientName=self.core.patients[r.patient_id].name,
            diagnosis=r.diagnosis,
            reportDoctor=r.reporter,
            auditDoctor=r.verifier,
        )
        if r.lab is not None:
            out["lis"] = {
                "specimen": r.lab.specimen,
                "collectTime": fmt_dt(r.lab.collect_time),
                "receiveTime": fmt_dt(r.lab.receive_time),
                "remark": r.lab.comment,
                "items": [
                    {
                        "itemCode": o.code,
                        "itemName": o.name,
                        "shortName": o.abbreviation,
                        "result": o.value,
                        "unit": o.unit,
                        "refRange": o.range_text,
                        "refLow": o.low,
                        "refHigh": o.high,
                        "flag": o.flag,
                        "sortNo": o.order,
                    }
                    for o in r.lab.observations
                ],
            }
        if r.imaging is not None:
            out["pacs"] = {
                "modality": r.imaging.modality,
                "bodyPart": r.imaging.body_site,
                "examMethod": r.imaging.method,
                "findings": r.imaging.findings,
                "impression": r.imaging.conclusion,
                "examTime": fmt_dt(r.imaging.study_time),
                "studyUid": r.imaging.study_uid,
            }
        return out

    def _create_patient(self, q: dict[str, Any]) -> Any:
        birthday = opt(q, "birthday")
        patient, created = self.core.register_patient(
            name=req(q, "name"),
            gender={"1": "M", "2": "F"}.get(opt(q, "sex"), ""),
            birth_date=parse_date(birthday, "birthday") if birthday else None,
            id_type=_reverse(CERT_TYPES, opt(q, "certType", "01"), "certType"),
            id_number=req(q, "certNo"),
            phone=opt(q, "mobile"),
            address=opt(q, "address"),
            ethnicity=opt(q, "nation"),
            card_type=_reverse(CARD_TYPES, opt(q, "cardType", "1"), "cardType"),
            card_number=opt(q, "cardNo"),
            payer=self._fee_type(q),
        )
        return {"created": created, "patient": self._patient(patient)}

    def _find_patients(self, q: dict[str, Any]) -> Any:
        found = self.core.find_patients(
            id_number=opt(q, "certNo"),
            card_number=opt(q, "cardNo"),
            phone=opt(q, "mobile"),
            name=opt(q, "name"),
        )
        return [self._patient(p) for p in found]
