from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tools.his_sim import (
    ArchiveReport,
    Latency,
    Outage,
    RenameField,
    RestHis,
    TimeoutAfterCommit,
    fault_from_json,
)

# ---------------------------------------------------------------- per-dialect drivers


async def _list_depts(kind, client):
    """Returns the vendor's error code, or "0" on success."""
    if kind == "rest":
        _, body = await client.call("GET", "/depts")
        return str(body["code"])
    if kind == "soap":
        code, _, _ = await client.call("1001", {})
        return code
    code, _, _ = await client.call("P_GET_REPORT", {})
    return "0" if code == "E001" else code  # a DB round trip that needs no data


async def _book(kind, client, pid, slot_id, ref, *, wait=5.0):
    if kind == "rest":
        async with client.session.post(
            client.his.base_url + "/openapi/v3/registrations",
            json={"sourceId": slot_id, "patientId": pid, "orderNo": ref},
            timeout=aiohttp.ClientTimeout(total=wait),
        ) as resp:
            return (await resp.json())["code"]
    if kind == "soap":
        async with client.session.post(
            client.his.base_url + "/HisWebService.asmx",
            data=client.envelope("2003", {"HYID": slot_id, "BRID": pid, "JYLSH": ref}),
            timeout=aiohttp.ClientTimeout(total=wait),
        ) as resp:
            return resp.status
    row = await client.response(
        await client.submit("P_REGISTER", {"SOURCE_ID": slot_id, "PATIENT_ID": pid}), wait
    )
    if row is None:
        raise TimeoutError("no response row")
    return row["RET_CODE"]


@pytest.fixture(params=["rest", "soap", "db"])
def his_client(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(params=["rest", "soap"])
def http_client(request):
    return request.param, request.getfixturevalue(request.param)


# ---------------------------------------------------------------- latency


async def test_latency_delays_matching_operations_only(his_client):
    kind, client = his_client
    assert await _list_depts(kind, client) == "0"
    op = "list_departments" if kind != "db" else "get_report"
    await client.his.inject(Latency(0.3, frozenset({op})))
    start = time.monotonic()
    assert await _list_depts(kind, client) == "0"
    assert time.monotonic() - start >= 0.3
    await client.his.clear_faults()
    # Another operation's latency must not apply: were it applied, the listing would take
    # 30 s and the timeout ends the test; no tight bound on a loaded machine.
    await client.his.inject(Latency(30.0, frozenset({"settle"})))
    async with asyncio.timeout(10):
        assert await _list_depts(kind, client) == "0"


# ---------------------------------------------------------------- outage


async def test_outage_503_answers_with_vendor_unavailable(his_client):
    kind, client = his_client
    await client.his.inject(Outage("503"))
    if kind == "rest":
        status, body = await client.call("GET", "/depts")
        assert (status, body["code"]) == (503, 50301)
    elif kind == "soap":
        status, body = await client.raw(client.envelope("1001", {}))
        assert status == 503
        assert "soap:Server" in body
    else:
        code, _, _ = await client.call("P_GET_REPORT", {})
        assert code == "-9"
    assert client.his.request_log[-1].outcome == "outage"
    await client.his.clear_faults()
    assert await _list_depts(kind, client) == "0"


async def test_outage_refuse_closes_the_socket_until_cleared(http_client):
    kind, client = http_client
    assert await _list_depts(kind, client) == "0"
    await client.his.inject(Outage("refuse"))
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh:
            await fresh.get(client.his.base_url + "/openapi/v3/depts")
    # A connection kept alive from before the outage is reset, not served.
    with pytest.raises(aiohttp.ClientConnectionError):
        await _list_depts(kind, client)
    await client.his.clear_faults()
    assert await _list_depts(kind, client) == "0"


async def test_outage_refuse_with_duration_heals_itself(rest):
    await rest.his.inject(Outage("refuse", duration=0.3))
    start = time.monotonic()
    while True:
        try:
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(rest.his.base_url + "/openapi/v3/depts") as resp,
            ):
                assert resp.status == 200
                break
        except aiohttp.ClientConnectionError:
            assert time.monotonic() - start < 5
            await asyncio.sleep(0.02)
    assert time.monotonic() - start >= 0.3


async def test_db_outage_refuse_leaves_requests_unprocessed(db):
    await db.his.inject(Outage("refuse"))
    req_id = await db.submit("P_GET_REPORT", {})
    assert await db.response(req_id, wait=0.3) is None
    await db.his.clear_faults()
    row = await db.response(req_id, wait=5)
    assert row is not None
    assert row["RET_CODE"] == "E001"


# ---------------------------------------------------------------- timeout after commit


@pytest.mark.parametrize("mode", ["hang", "drop"])
async def test_timeout_after_commit_keeps_exactly_one_booking(his_client, mode):
    kind, client = his_client
    core = client.his.core
    pid = "P00000005"
    slot = core.bookable_slot(patient_id=pid)
    await client.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode=mode, hang_seconds=30.0))
    expected = (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError)
    with pytest.raises(expected):
        await _book(kind, client, pid, slot.slot_id, "ord:book", wait=0.5)
    assert client.his.request_log[-1].outcome == "lost"
    assert len(core.bookings(patient_id=pid, slot_id=slot.slot_id)) == 1
    # The fault is used up: the next write answers normally, and the HIS's own rules
    # (duplicate order number, real-name rule) refuse a blind retry.
    if kind == "rest":
        assert await _book(kind, client, pid, slot.slot_id, "ord:book") == 40901
        found = await client.ok("GET", "/registrations", params={"orderNo": "ord:book"})
        assert found[0]["regStatus"] == "BOOKED"
    elif kind == "soap":
        code, _, data = await client.call("2005", {"JYLSH": "ord:book"})
        assert code == "0"
        assert data["GHZT"] == "1"
    else:
        rows = await client.query(
            f'SELECT * FROM {client.t("V_HIS_REG_RECORD")} WHERE "PATIENT_ID" = :p', p=pid
        )
        assert [r["REG_STATUS"] for r in rows] == ["R"]
    assert len(core.bookings(patient_id=pid)) == 1


async def test_db_hang_answers_late(db):
    pid = "P00000006"
    slot = db.his.core.bookable_slot(patient_id=pid)
    await db.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode="hang", hang_seconds=0.5))
    start = time.monotonic()
    req_id = await db.submit("P_REGISTER", {"SOURCE_ID": slot.slot_id, "PATIENT_ID": pid})
    assert await db.response(req_id, wait=0.2) is None
    row = await db.response(req_id, wait=5)
    assert row is not None
    assert row["RET_CODE"] == "0"
    assert time.monotonic() - start >= 0.5
    assert len(db.his.core.bookings(patient_id=pid)) == 1


async def test_timeout_after_commit_on_settle(rest):
    pid = "P00000007"
    bills = await rest.ok("GET", f"/patients/{pid}/unpaid-bills")
    nos = [b["billNo"] for b in bills]
    quote = await rest.ok("POST", "/settlements/preview", body={"patientId": pid, "billNos": nos})
    await rest.his.inject(TimeoutAfterCommit(mode="drop"))
    with pytest.raises(aiohttp.ClientError):
        await rest.call(
            "POST",
            "/settlements",
            body={
                "patientId": pid,
                "billNos": nos,
                "orderNo": "s:1",
                "payment": {"payMode": "WX", "tradeNo": "t", "payAmount": quote["cashPay"]},
            },
        )
    assert len(rest.his.core.charges_of(pid)) == 1
    assert (await rest.ok("GET", "/settlements", params={"orderNo": "s:1"}))["orderNo"] == "s:1"


# ---------------------------------------------------------------- changed interface


async def test_rest_renamed_field_in_and_out(rest):
    await rest.his.inject(RenameField("deptCode", "departmentCode"))
    depts = await rest.ok("GET", "/depts")
    assert "departmentCode" in depts[0]
    assert "deptCode" not in depts[0]
    all_doctors = await rest.ok("GET", "/doctors")
    old_filter = await rest.ok("GET", "/doctors", params={"deptCode": "0101"})
    new_filter = await rest.ok("GET", "/doctors", params={"departmentCode": "0101"})
    assert len(old_filter) == len(all_doctors) > len(new_filter) > 0
    await rest.his.clear_faults()
    assert "deptCode" in (await rest.ok("GET", "/depts"))[0]


async def test_soap_renamed_element(soap):
    await soap.his.inject(RenameField("KSDM", "DEPT_CODE"))
    depts = (await soap.ok("1001", {}))["KSLB"]
    assert "DEPT_CODE" in depts[0]
    assert "KSDM" not in depts[0]
    doctors = (await soap.ok("1002", {"DEPT_CODE": "0300"}))["YSLB"]
    assert {d["DEPT_CODE"] for d in doctors} == {"0300"}


async def test_db_renamed_column_and_parameter(db):
    await db.his.inject(RenameField("DEPT_ID", "DEPT_CODE"))
    rows = await db.query(f"SELECT * FROM {db.t('V_HIS_DEPT')}")
    assert "DEPT_CODE" in rows[0]
    assert "DEPT_ID" not in rows[0]
    await db.his.inject(RenameField("SOURCE_ID", "SRC_ID"))
    pid = "P00000008"
    slot = db.his.core.bookable_slot(patient_id=pid)
    code, msg, _ = await db.call("P_LOCK_SOURCE", {"SOURCE_ID": slot.slot_id, "PATIENT_ID": pid})
    assert code == "E001"
    assert "SOURCE_ID" in msg
    out = await db.ok("P_LOCK_SOURCE", {"SRC_ID": slot.slot_id, "PATIENT_ID": pid})
    assert out["SRC_ID"] == slot.slot_id
    await db.his.clear_faults()
    assert "DEPT_ID" in (await db.query(f"SELECT * FROM {db.t('V_HIS_DEPT')}"))[0]


# ---------------------------------------------------------------- archiving


async def _read_report(kind, client, report):
    if kind == "rest":
        _, body = await client.call(
            "GET", f"/reports/{report.report_id}", params={"patientId": report.patient_id}
        )
        return str(body["code"])
    if kind == "soap":
        code, _, _ = await client.call(
            "4002", {"BGID": report.report_id, "BRID": report.patient_id}
        )
        return code
    code, _, _ = await client.call(
        "P_GET_REPORT", {"REPORT_ID": report.report_id, "PATIENT_ID": report.patient_id}
    )
    return code


ARCHIVED = {"rest": "42209", "soap": "4001", "db": "E301"}


async def _retrieve_archived(kind, client, report):
    """The slow archive path (what the edge's task queue calls): returns the title read."""
    if kind == "rest":
        data = await client.ok(
            "GET",
            f"/archive/reports/{report.report_id}",
            params={"patientId": report.patient_id},
        )
        return data["reportName"]
    if kind == "soap":
        data = await client.ok("4003", {"BGID": report.report_id, "BRID": report.patient_id})
        return data["BGMC"]
    data = await client.ok(
        "P_GET_ARCHIVED_REPORT", {"REPORT_ID": report.report_id, "PATIENT_ID": report.patient_id}
    )
    return data["REPORT_NAME"]


async def test_archive_after_reads(his_client):
    kind, client = his_client
    core = client.his.core
    report = next(r for r in core.reports.values() if r.status == "FINAL" and not r.archived)
    await client.his.inject(ArchiveReport(report.report_id, after_reads=1))
    assert await _read_report(kind, client, report) == "0"
    assert await _read_report(kind, client, report) == ARCHIVED[kind]
    assert await _retrieve_archived(kind, client, report) == report.title
    assert client.his.request_log[-1].operation == "retrieve_archived_report"
    if kind == "db":
        rows = await client.query(
            f'SELECT "ARCHIVE_FLAG" FROM {client.t("V_HIS_REPORT")} WHERE "REPORT_ID" = :r',
            r=report.report_id,
        )
        assert rows == [{"ARCHIVE_FLAG": "Y"}]
    elif kind == "rest":
        heads = await client.ok("GET", f"/patients/{report.patient_id}/reports")
        assert next(h for h in heads if h["reportId"] == report.report_id)["archived"] is True


async def test_archive_after_seconds(rest):
    core = rest.his.core
    report = next(r for r in core.reports.values() if r.status == "FINAL" and not r.archived)
    await rest.his.inject(ArchiveReport(report.report_id, after_seconds=0.3))
    start = time.monotonic()
    assert await _read_report("rest", rest, report) == "0"
    while await _read_report("rest", rest, report) == "0":
        assert time.monotonic() - start < 5
        await asyncio.sleep(0.02)
    assert time.monotonic() - start >= 0.3
    assert await _read_report("rest", rest, report) == "42209"


# ---------------------------------------------------------------- request log and admin API


async def test_request_log_records_operations_outcomes_and_times(rest):
    for _ in range(5):
        await rest.call("GET", "/depts")
    await rest.call("GET", "/registrations/NOPE")
    log = rest.his.request_log
    assert [r.operation for r in log] == ["list_departments"] * 5 + ["get_appointment"]
    assert [r.outcome for r in log] == ["ok"] * 5 + ["error:40401"]
    times = [r.monotonic for r in log]
    assert times == sorted(times)
    assert all(r.time.utcoffset() is not None for r in log)


async def test_admin_http_api(rest, session):
    admin = rest.his.base_url + "/_admin"
    async with session.post(admin + "/faults", json={"type": "latency", "seconds": 0.2}) as r:
        assert r.status == 200
        assert (await r.json())["faults"] == [{"type": "latency", "seconds": 0.2, "operations": []}]
    start = time.monotonic()
    await rest.call("GET", "/depts")
    assert time.monotonic() - start >= 0.2
    async with session.post(admin + "/faults", json={"type": "outage", "mode": "sideways"}) as r:
        assert r.status == 400
    async with session.post(admin + "/faults", data=b"nope") as r:
        assert r.status == 400
    async with session.delete(admin + "/faults") as r:
        assert (await r.json())["faults"] == []
    slot = rest.his.core.bookable_slot(patient_id="P00000009")
    await rest.ok(
        "POST", "/registrations", body={"sourceId": slot.slot_id, "patientId": "P00000009"}
    )
    async with session.get(admin + "/counts", params={"patient_id": "P00000009"}) as r:
        counts = await r.json()
    assert counts["bookings"] == 1
    assert counts["matching_bookings"] == 1
    async with session.get(admin + "/requests", params={"operation": "book"}) as r:
        assert [x["outcome"] for x in (await r.json())["requests"]] == ["ok"]
    async with session.post(admin + "/bills", json={"patient_id": "P00000009"}) as r:
        bill = await r.json()
    bills = await rest.ok("GET", "/patients/P00000009/unpaid-bills")
    assert bill["bill_id"] in {b["billNo"] for b in bills}
    async with session.post(
        admin + f"/schedules/{slot.schedule_id}/suspend", json={"reason": "外出会诊"}
    ) as r:
        assert r.status == 200
    sched = next(
        s for s in await rest.ok("GET", "/schedules") if s["scheduleId"] == slot.schedule_id
    )
    assert (sched["scheduleStatus"], sched["stopReason"]) == ("0", "外出会诊")
    async with session.get(admin + "/info") as r:
        info = await r.json()
    assert info["dialect"] == "rest"
    assert info["seed"] == 11


async def test_separate_admin_port_survives_refuse_outage(session):
    async with RestHis(seed=3, admin_port=0) as his:
        assert his.admin_port != his.port
        admin = f"http://127.0.0.1:{his.admin_port}/_admin/faults"
        async with session.post(admin, json={"type": "outage", "mode": "refuse"}) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(his.base_url + "/openapi/v3/depts")
        async with session.delete(admin) as r:
            assert r.status == 200
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(his.base_url + "/openapi/v3/depts") as resp,
        ):
            assert resp.status == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "earthquake"},
        {"type": "latency", "seconds": -1},
        {"type": "latency"},
        {"type": "timeout_after_commit", "operations": ["list_departments"]},
        {"type": "timeout_after_commit", "mode": "explode"},
        {"type": "archive_report", "report_id": "R1"},
        {"type": "rename_field", "old": "a", "new": ""},
        {"type": "latency", "seconds": 1, "operations": "book"},
    ],
)
def test_bad_fault_specs_are_refused(bad):
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
        fault_from_json(bad)


def test_fault_spec_round_trip():
    fault = fault_from_json(
        {"type": "timeout_after_commit", "operations": ["settle"], "mode": "drop", "times": 2}
    )
    assert fault == TimeoutAfterCommit(frozenset({"settle"}), "drop", 30.0, 2)


async def test_admin_lists_patients_appointments_and_a_bookable_slot(his_client):
    # What the chaos run reads out of process: who can book, what is free, what is held.
    _, client = his_client
    his = client.his
    async with aiohttp.ClientSession() as session:
        async with session.get(his.base_url + "/_admin/patients") as resp:
            patients = (await resp.json())["patients"]
        assert len(patients) == len(his.core.patients)
        pid = patients[9]["patient_id"]
        assert patients[9]["id_number"] == his.core.patient(pid).id_number
        async with session.get(
            his.base_url + "/_admin/bookable_slot", params={"patient_id": pid}
        ) as resp:
            slot = await resp.json()
        assert slot["slot_id"] == his.core.bookable_slot(patient_id=pid).slot_id
        async with session.get(
            his.base_url + "/_admin/bookable_slot", params={"patient_id": "P99999999"}
        ) as resp:
            assert resp.status == 404
        held = his.core.hold(slot_id=slot["slot_id"], patient_id=pid)
        async with session.get(
            his.base_url + "/_admin/appointments", params={"status": "HELD"}
        ) as resp:
            listed = (await resp.json())["appointments"]
        assert [(a["hold_id"], a["patient_id"], a["slot_id"]) for a in listed] == [
            (held.hold_id, pid, slot["slot_id"])
        ]
        async with session.get(
            his.base_url + "/_admin/appointments", params={"status": "BOOKED"}
        ) as resp:
            assert (await resp.json())["appointments"] == []
