from __future__ import annotations

import datetime as dt

from tools.his_sim import RestHis, id_card_check_digit, is_valid_id_card


async def _book(rest, patient_id: str, order_no: str, *, skip: int = 0):
    slot = rest.his.core.bookable_slot(patient_id=patient_id, skip=skip)
    lock = await rest.ok(
        "POST",
        "/registrations/lock",
        body={"sourceId": slot.slot_id, "patientId": patient_id, "lockMinutes": 10},
    )
    reg = await rest.ok(
        "POST",
        "/registrations",
        body={
            "lockId": lock["lockId"],
            "patientId": patient_id,
            "orderNo": order_no,
            "payment": {"payMode": "WX", "tradeNo": "wx-" + order_no, "payAmount": lock["selfFee"]},
        },
    )
    return slot, lock, reg


async def test_directory_lists_departments_doctors_schedules_and_sources(rest):
    depts = await rest.ok("GET", "/depts")
    names = {d["deptName"] for d in depts}
    assert {"心血管内科", "普通外科", "儿科", "妇科", "产科"} <= names
    assert {"deptCode", "parentDeptCode", "onlineBookable", "lastModified"} <= set(depts[0])

    doctors = await rest.ok("GET", "/doctors", params={"deptCode": "0101"})
    assert doctors
    assert all("0101" in d["deptCodes"] for d in doctors)
    assert {d["titleCode"] for d in doctors} <= {"231", "232", "233", "234"}

    tomorrow = (rest.his.core.today + dt.timedelta(days=1)).isoformat()
    schedules = await rest.ok(
        "GET", "/schedules", params={"deptCode": "0101", "beginDate": tomorrow, "endDate": tomorrow}
    )
    assert schedules
    assert {s["visitDate"] for s in schedules} == {tomorrow}
    assert {s["timeFlag"] for s in schedules} <= {"AM", "PM"}
    expert = next(s for s in schedules if s["doctorCode"])
    assert float(expert["totalFee"]) == float(expert["regFee"]) + float(expert["diagFee"])

    sources = await rest.ok("GET", f"/schedules/{expert['scheduleId']}/sources")
    assert sum(s["totalNum"] for s in sources) == expert["totalNum"]
    assert all(s["status"] == "1" for s in sources)


async def test_hold_book_cancel_and_query_by_order_no(rest):
    core = rest.his.core
    pid = "P00000010"
    slot, lock, reg = await _book(rest, pid, "order-1:book")
    assert lock["regStatus"] == "LOCKED"
    assert lock["lockExpireTime"]
    assert reg["regStatus"] == "BOOKED"
    assert reg["seqNo"] >= 1
    assert reg["receiptNo"]
    assert reg["lockId"] == lock["lockId"]
    assert reg["regId"] != lock["lockId"]
    assert len(core.bookings(patient_id=pid, slot_id=slot.slot_id)) == 1

    status, body = await rest.call(
        "POST", "/registrations", body={"lockId": lock["lockId"], "patientId": pid}
    )
    assert (status, body["code"]) == (400, 40001)
    assert len(core.bookings(patient_id=pid)) == 1

    found = await rest.ok("GET", "/registrations", params={"orderNo": "order-1:book"})
    assert [r["regId"] for r in found] == [reg["regId"]]
    assert (await rest.ok("GET", f"/registrations/{reg['regId']}"))["regStatus"] == "BOOKED"

    cancelled = await rest.ok(
        "POST", f"/registrations/{reg['regId']}/cancel", body={"patientId": pid, "reason": "有事"}
    )
    assert cancelled["regStatus"] == "CANCELLED"
    assert cancelled["refundReceiptNo"]
    again = await rest.ok("POST", f"/registrations/{reg['regId']}/cancel", body={"patientId": pid})
    assert again["refundReceiptNo"] == cancelled["refundReceiptNo"]
    assert core.counts().bookings == 0
    assert core.counts().cancellations == 1

    mine = await rest.ok("GET", "/registrations", params={"patientId": pid})
    assert [r["regId"] for r in mine] == [reg["regId"]]


async def test_duplicate_order_no_is_refused_without_a_second_booking(rest):
    pid = "P00000011"
    await _book(rest, pid, "dup:book")
    slot = rest.his.core.bookable_slot(patient_id=pid, skip=3)
    status, body = await rest.call(
        "POST",
        "/registrations",
        body={"sourceId": slot.slot_id, "patientId": pid, "orderNo": "dup:book"},
    )
    assert (status, body["code"]) == (409, 40901)
    assert rest.his.core.counts().bookings == 1


async def test_unlock_and_expired_lock_cannot_be_booked(rest):
    pid = "P00000012"
    slot = rest.his.core.bookable_slot(patient_id=pid)
    lock = await rest.ok(
        "POST", "/registrations/lock", body={"sourceId": slot.slot_id, "patientId": pid}
    )
    unlocked = await rest.ok("POST", "/registrations/unlock", body={"lockId": lock["lockId"]})
    assert unlocked["regStatus"] == "UNLOCKED"
    status, body = await rest.call(
        "POST", "/registrations", body={"lockId": lock["lockId"], "patientId": pid}
    )
    assert (status, body["code"]) == (422, 42203)


async def test_business_rules_and_bad_input_give_vendor_errors(rest):
    core = rest.his.core
    male = next(p for p in core.patients.values() if p.gender == "M" and p.birth_date.year < 2000)
    gyn = next(
        s
        for s in core.list_schedules(start=core.today + dt.timedelta(days=1))
        if s.dept_id == "0401"
    )
    slot = core.slots_of(gyn.schedule_id)[0]
    status, body = await rest.call(
        "POST", "/registrations/lock", body={"sourceId": slot.slot_id, "patientId": male.patient_id}
    )
    assert (status, body["code"]) == (422, 42202)

    status, body = await rest.call("POST", "/registrations/lock", body={"patientId": "P00000001"})
    assert (status, body["code"]) == (400, 40001)
    assert "sourceId" in body["message"]
    status, body = await rest.call("GET", "/registrations/NOPE")
    assert (status, body["code"]) == (404, 40401)
    status, body = await rest.call("GET", "/schedules", params={"beginDate": "28/11/2026"})
    assert (status, body["code"]) == (400, 40001)
    async with rest.session.post(
        rest.his.base_url + "/openapi/v3/registrations", data=b"{not json"
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == 40001
    status, body = await rest.call(
        "POST",
        "/registrations",
        body={"sourceId": slot.slot_id, "patientId": "P00000001", "payment": "cash"},
    )
    assert (status, body["code"]) == (400, 40001)


async def test_numbered_source_is_full_after_one_booking(rest):
    core = rest.his.core
    slot = core.bookable_slot(patient_id="P00000013", mode="NUMBERED")
    await rest.ok(
        "POST", "/registrations", body={"sourceId": slot.slot_id, "patientId": "P00000013"}
    )
    status, body = await rest.call(
        "POST", "/registrations/lock", body={"sourceId": slot.slot_id, "patientId": "P00000014"}
    )
    assert (status, body["code"]) == (422, 42201)
    sources = await rest.ok("GET", f"/schedules/{slot.schedule_id}/sources")
    assert next(s for s in sources if s["sourceId"] == slot.slot_id)["status"] == "0"


async def test_amount_mismatch_is_refused(rest):
    slot = rest.his.core.bookable_slot(patient_id="P00000015")
    status, body = await rest.call(
        "POST",
        "/registrations",
        body={
            "sourceId": slot.slot_id,
            "patientId": "P00000015",
            "payment": {"payMode": "WX", "tradeNo": "t", "payAmount": "0.01"},
        },
    )
    assert (status, body["code"]) == (422, 42204)
    assert rest.his.core.counts().bookings == 0


async def test_changes_since_returns_only_what_changed(rest):
    full = await rest.ok("GET", "/changes")
    assert len(full["depts"]) == len(rest.his.core.departments)
    assert len(full["sources"]) == len(rest.his.core.slots)
    mark = full["serverTime"]

    assert (await rest.ok("GET", "/changes", params={"since": mark}))["sources"] == []
    slot, _, _ = await _book(rest, "P00000016", "chg:1")
    delta = await rest.ok("GET", "/changes", params={"since": mark})
    assert [s["sourceId"] for s in delta["sources"]] == [slot.slot_id]
    assert [s["scheduleId"] for s in delta["schedules"]] == [slot.schedule_id]
    assert delta["depts"] == []
    assert delta["doctors"] == []

    rest.his.core.delete_schedule(next(iter(rest.his.core.schedules)))
    delta2 = await rest.ok("GET", "/changes", params={"since": delta["serverTime"]})
    assert {d["type"] for d in delta2["deleted"]} == {"schedule", "source"}


async def test_settle_refund_query_by_order_no_and_ledger(rest):
    core = rest.his.core
    pid = "P00000017"
    bills = await rest.ok("GET", f"/patients/{pid}/unpaid-bills")
    assert len(bills) == 2
    assert bills[0]["items"]
    nos = [b["billNo"] for b in bills]
    preview = await rest.ok("POST", "/settlements/preview", body={"patientId": pid, "billNos": nos})
    settle = await rest.ok(
        "POST",
        "/settlements",
        body={
            "patientId": pid,
            "billNos": nos,
            "orderNo": "pay-1:settle",
            "payment": {"payMode": "ZFB", "tradeNo": "ali-1", "payAmount": preview["cashPay"]},
        },
    )
    assert settle["settleStatus"] == "1"
    assert settle["cashPay"] == preview["cashPay"]
    assert await rest.ok("GET", f"/patients/{pid}/unpaid-bills") == []
    by_key = await rest.ok("GET", "/settlements", params={"orderNo": "pay-1:settle"})
    assert by_key["settleId"] == settle["settleId"]

    status, body = await rest.call(
        "POST",
        "/settlements",
        body={"patientId": pid, "billNos": nos, "payment": {"payMode": "WX", "payAmount": "1"}},
    )
    assert (status, body["code"]) == (422, 42205)

    part = await rest.ok(
        "POST",
        f"/settlements/{settle['settleId']}/refund",
        body={"refundAmount": "0.50", "orderNo": "pay-1:refund"},
    )
    assert part["refundAmount"] == "0.50"
    status, body = await rest.call(
        "POST", f"/settlements/{settle['settleId']}/refund", body={"refundAmount": "99999"}
    )
    assert (status, body["code"]) == (422, 42206)
    assert (await rest.ok("GET", f"/settlements/{settle['settleId']}"))["settleStatus"] == "2"
    refund = await rest.ok("GET", "/refunds", params={"orderNo": "pay-1:refund"})
    assert refund["refundId"] == part["refundId"]
    assert (await rest.ok("GET", f"/refunds/{part['refundId']}"))["refundStatus"] == "SUCCESS"
    assert core.counts().charges == 1
    assert core.counts().refunds == 1

    ledger = await rest.ok("GET", "/ledger", params={"date": core.now().date().isoformat()})
    assert [r["bizType"] for r in ledger["records"]] == ["JF", "TF"]
    assert ledger["records"][0]["tradeNo"] == "ali-1"


async def test_reports_list_and_content(rest):
    core = rest.his.core
    report = next(r for r in core.reports.values() if r.kind == "LAB" and r.lab and not r.archived)
    heads = await rest.ok("GET", f"/patients/{report.patient_id}/reports")
    assert report.report_id in {h["reportId"] for h in heads}
    full = await rest.ok(
        "GET", f"/reports/{report.report_id}", params={"patientId": report.patient_id}
    )
    item = full["lis"]["items"][0]
    assert {"itemCode", "result", "refRange", "flag", "unit"} <= set(item)
    assert full["abnormal"] == any(i["flag"] != "N" for i in full["lis"]["items"])
    status, body = await rest.call(
        "GET", f"/reports/{report.report_id}", params={"patientId": "P00000999"}
    )
    assert (status, body["code"]) == (422, 42210)


async def test_register_and_find_patient(rest):
    first17 = "11010119900307001"
    cert = first17 + id_card_check_digit(first17)
    body = {"name": "测试甲", "certType": "01", "certNo": cert, "mobile": "13800138000"}
    made = await rest.ok("POST", "/patients", body=body)
    assert made["created"]
    assert made["patient"]["birthday"] == "1990-03-07"
    assert made["patient"]["sex"] == "1"
    assert is_valid_id_card(made["patient"]["certNo"])
    again = await rest.ok("POST", "/patients", body=body)
    assert not again["created"]
    assert again["patient"]["patientId"] == made["patient"]["patientId"]
    status, resp = await rest.call("POST", "/patients", body={**body, "name": "测试乙"})
    assert (status, resp["code"]) == (422, 42208)
    status, resp = await rest.call("POST", "/patients", body={**body, "certNo": first17 + "Y"})
    assert (status, resp["code"]) == (400, 40001)

    found = await rest.ok("GET", "/patients", params={"mobile": "13800138000", "name": "测试甲"})
    assert [p["patientId"] for p in found] == [made["patient"]["patientId"]]
    found = await rest.ok("GET", "/patients", params={"cardNo": made["patient"]["cardNo"]})
    assert len(found) == 1
    status, resp = await rest.call("GET", "/patients", params={"mobile": "13800138000"})
    assert (status, resp["code"]) == (400, 40001)


class _Clock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


async def test_hold_expires_and_cancel_deadline_follow_the_clock(session, rest_client):
    cst = dt.timezone(dt.timedelta(hours=8))
    clock = _Clock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=cst))
    async with RestHis(seed=21, clock=clock) as his:
        rest = rest_client(session, his)
        pid = "P00000010"
        slot = his.core.bookable_slot(patient_id=pid, mode="NUMBERED")
        lock = await rest.ok(
            "POST",
            "/registrations/lock",
            body={"sourceId": slot.slot_id, "patientId": pid, "lockMinutes": 5},
        )
        assert lock["lockExpireTime"] == "2026-03-02 09:05:00"
        status, body = await rest.call(
            "POST", "/registrations/lock", body={"sourceId": slot.slot_id, "patientId": "P00000011"}
        )
        assert (status, body["code"]) == (422, 42201)

        clock.now += dt.timedelta(minutes=5)
        assert (await rest.ok("GET", f"/registrations/{lock['lockId']}"))["regStatus"] == "UNLOCKED"
        status, body = await rest.call(
            "POST", "/registrations", body={"lockId": lock["lockId"], "patientId": pid}
        )
        assert (status, body["code"]) == (422, 42203)
        reg = await rest.ok(
            "POST", "/registrations", body={"sourceId": slot.slot_id, "patientId": "P00000011"}
        )
        assert reg["regStatus"] == "BOOKED"

        clock.now = his.core.schedules[slot.schedule_id].start_at
        status, body = await rest.call(
            "POST", f"/registrations/{reg['regId']}/cancel", body={"patientId": "P00000011"}
        )
        assert (status, body["code"]) == (422, 42207)
        clock.now = his.core.schedules[slot.schedule_id].end_at + dt.timedelta(seconds=1)
        other = his.core.slots_of(slot.schedule_id)[-1]
        status, body = await rest.call(
            "POST", "/registrations", body={"sourceId": other.slot_id, "patientId": "P00000012"}
        )
        assert (status, body["code"]) == (422, 42211)


async def test_unexpected_failure_is_a_vendor_error_not_a_crash(rest, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(rest.his.core, "list_departments", boom)
    status, body = await rest.call("GET", "/depts")
    assert (status, body["code"]) == (500, 50000)
    assert "bug" not in body["message"]
    assert (await rest.call("GET", "/doctors"))[0] == 200
