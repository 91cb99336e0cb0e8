from __future__ import annotations

import datetime as dt

import pytest

from tools.his_sim import SOAP_NS, WS_NS


async def _book(soap, patient_id: str, serial: str):
    slot = soap.his.core.bookable_slot(patient_id=patient_id)
    lock = await soap.ok("2001", {"HYID": slot.slot_id, "BRID": patient_id, "SDSC": "5"})
    reg = await soap.ok(
        "2003",
        {
            "SDID": lock["SDID"],
            "BRID": patient_id,
            "ZFFS": "1",
            "ZFJYH": "wx-" + serial,
            "ZFJE": lock["GRZF"],
            "JYLSH": serial,
        },
    )
    return slot, lock, reg


async def test_directory_trade_codes(soap):
    depts = (await soap.ok("1001", {}))["KSLB"]
    assert {"KSDM", "KSMC", "SJKSDM", "SFYY"} <= set(depts[0])
    assert "儿科" in {d["KSMC"] for d in depts}
    doctors = (await soap.ok("1002", {"KSDM": "0300"}))["YSLB"]
    assert doctors
    assert all(d["KSDM"] == "0300" for d in doctors)
    assert {d["ZCDM"] for d in doctors} <= {"1", "2", "3", "4"}
    day = (soap.his.core.today + dt.timedelta(days=2)).isoformat()
    schedules = (await soap.ok("1003", {"KSDM": "0300", "KSRQ": day, "JSRQ": day}))["PBLB"]
    assert schedules
    assert {s["JZRQ"] for s in schedules} == {day}
    assert {s["SWXW"] for s in schedules} <= {"1", "2"}
    assert all(s["NLSX"] == "14" for s in schedules)  # paediatrics: up to 14 years
    slots = (await soap.ok("1004", {"PBID": schedules[0]["PBID"]}))["HYLB"]
    assert slots
    assert {"HYID", "XH", "SYHS", "ZT"} <= set(slots[0])


async def test_hold_book_cancel_and_query_by_serial(soap):
    core = soap.his.core
    pid = "P00000020"
    slot, lock, reg = await _book(soap, pid, "ord-2:book")
    assert lock["GHZT"] == "0"
    assert reg["GHZT"] == "1"
    assert int(reg["JZXH"]) >= 1
    assert len(core.bookings(patient_id=pid, slot_id=slot.slot_id)) == 1
    assert (await soap.ok("2005", {"JYLSH": "ord-2:book"}))["GHID"] == reg["GHID"]
    assert (await soap.ok("2005", {"GHID": reg["GHID"]}))["JYLSH"] == "ord-2:book"
    listed = (await soap.ok("2006", {"BRID": pid}))["GHLB"]
    assert [r["GHID"] for r in listed] == [reg["GHID"]]
    cancelled = await soap.ok("2004", {"GHID": reg["GHID"], "BRID": pid, "TYYY": "行程变更"})
    assert cancelled["GHZT"] == "2"
    assert cancelled["TFSJH"]
    code, _, _ = await soap.call("2004", {"GHID": reg["GHID"], "BRID": "P00000021"})
    assert code == "2006"
    released = await soap.ok(
        "2002",
        {"SDID": (await soap.ok("2001", {"HYID": slot.slot_id, "BRID": pid}))["SDID"]},
    )
    assert released["GHZT"] == "3"


async def test_no_incremental_sync_trade(soap):
    code, msg, _ = await soap.call("1099", {"GXSJ": "2026-01-01 00:00:00"})
    assert code == "1001"
    assert "交易码" in msg


async def test_billing_and_ledger(soap):
    core = soap.his.core
    pid = "P00000022"
    bills = (await soap.ok("3001", {"BRID": pid}))["CFLB"]
    nos = [b["CFH"] for b in bills]
    assert bills[0]["MXLB"]
    assert {"XMDM", "FYLB", "JE"} <= set(bills[0]["MXLB"][0])
    quote = await soap.ok("3002", {"BRID": pid, "CFHLB": nos, "FB": "2"})
    assert float(quote["TCZF"]) > 0  # employee insurance pays part
    code, _, _ = await soap.call(
        "3003",
        {"BRID": pid, "CFHLB": nos, "FB": "2", "ZFFS": "1", "ZFJE": "0.01", "JYLSH": "x"},
    )
    assert code == "2004"
    charge = await soap.ok(
        "3003",
        {
            "BRID": pid,
            "CFHLB": nos,
            "FB": "2",
            "ZFFS": "1",
            "ZFJYH": "wx-9",
            "ZFJE": quote["XJZF"],
            "JYLSH": "pay-9:settle",
        },
    )
    assert charge["JSZT"] == "1"
    assert charge["CFHLB"] == nos
    assert (await soap.ok("3004", {"JYLSH": "pay-9:settle"}))["JSID"] == charge["JSID"]
    refund = await soap.ok("3005", {"JSID": charge["JSID"], "JYLSH": "pay-9:refund"})
    assert refund["TFJE"] == charge["XJZF"]
    assert (await soap.ok("3006", {"JYLSH": "pay-9:refund"}))["TFID"] == refund["TFID"]
    assert (await soap.ok("3004", {"JSID": charge["JSID"]}))["JSZT"] == "3"
    ledger = await soap.ok("3007", {"RQ": core.now().date().isoformat()})
    assert [x["YWLX"] for x in ledger["MXLB"]] == ["3", "4"]


async def test_reports_and_patients(soap):
    core = soap.his.core
    report = next(
        r for r in core.reports.values() if r.kind == "IMAGING" and r.imaging and not r.archived
    )
    heads = (await soap.ok("4001", {"BRID": report.patient_id}))["BGLB"]
    assert report.report_id in {h["BGID"] for h in heads}
    full = await soap.ok("4002", {"BGID": report.report_id, "BRID": report.patient_id})
    assert full["JCLX"] == report.imaging.modality
    assert full["ZDYJ"]
    old = next(r for r in core.reports.values() if r.archived)
    code, _, _ = await soap.call("4002", {"BGID": old.report_id, "BRID": old.patient_id})
    assert code == "4001"
    patient = core.patients["P00000023"]
    found = (await soap.ok("5002", {"ZJHM": patient.id_number}))["BRLB"]
    assert [p["BRID"] for p in found] == ["P00000023"]
    made = await soap.ok(
        "5001",
        {"XM": patient.name, "ZJLX": "1", "ZJHM": patient.id_number, "KLX": "2", "KH": "SB001"},
    )
    assert made["XJBZ"] == "0"
    assert made["BRXX"]["BRID"] == "P00000023"
    found = (await soap.ok("5002", {"KH": "SB001"}))["BRLB"]
    assert [p["BRID"] for p in found] == ["P00000023"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"<not-xml", "soap:Client"),
        (b'<?xml version="1.0"?><a><b/></a>', "soap:Client"),
        (
            b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
            b"<soap:Body>&b;</soap:Body></soap:Envelope>",
            "soap:Client",
        ),
    ],
)
async def test_malformed_or_hostile_xml_gets_a_soap_fault(soap, payload, fragment):
    status, body = await soap.raw(payload)
    assert status == 500
    assert fragment in body
    assert "Fault" in body


async def test_missing_parameter_and_unknown_trade(soap):
    code, msg, _ = await soap.call("2001", {"BRID": "P00000001"})
    assert code == "1001"
    assert "HYID" in msg
    code, _, _ = await soap.call("9999", {})
    assert code == "1001"
    code, _, _ = await soap.call("2005", {"GHID": "NOPE"})
    assert code == "1002"
    code, _, _ = await soap.call("2001", {"HYID": "H0000001", "BRID": "P00000001", "SDSC": "x"})
    assert code == "1001"


async def test_envelope_namespaces(soap):
    status, body = await soap.raw(soap.envelope("1001", {}))
    assert status == 200
    assert f'xmlns:soap="{SOAP_NS}"' in body
    assert f'xmlns="{WS_NS}"' in body
