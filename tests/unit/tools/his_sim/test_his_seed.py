from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import sys
from pathlib import Path

import aiohttp

import tools.his_sim
from tools.his_sim import HisCore, RestHis, id_card_check_digit, is_valid_id_card

REPO = Path(__file__).resolve().parents[4]
DAY = dt.date(2026, 3, 2)


def _snapshot(core: HisCore):
    return [
        [dataclasses.astuple(x) for x in coll]
        for coll in (
            core.departments.values(),
            core.doctors.values(),
            core.schedules.values(),
            core.slots.values(),
            core.patients.values(),
            core.bills.values(),
            core.reports.values(),
        )
    ]


def test_same_seed_same_data_and_other_seed_other_data():
    assert _snapshot(HisCore(5, today=DAY)) == _snapshot(HisCore(5, today=DAY))
    a, b = HisCore(5, today=DAY), HisCore(6, today=DAY)
    assert [p.name for p in a.patients.values()] != [p.name for p in b.patients.values()]
    assert [d.name for d in a.doctors.values()] != [d.name for d in b.doctors.values()]


def test_departments_doctors_and_schedules_are_plausible():
    core = HisCore(1, today=DAY)
    names = {d.name for d in core.departments.values()}
    assert {"内科", "外科", "儿科", "妇产科", "心血管内科", "眼科"} <= names
    parents = {d.parent_id for d in core.departments.values()} - {""}
    assert parents <= set(core.departments)
    titles = {d.title for d in core.doctors.values()}
    assert titles == {"CHIEF", "ASSOCIATE_CHIEF", "ATTENDING", "RESIDENT"}
    fee = {d.title: 0 for d in core.doctors.values()}
    for sched in core.schedules.values():
        if sched.doctor_id:
            fee[core.doctors[sched.doctor_id].title] = sched.fee
    assert fee["CHIEF"] > fee["ASSOCIATE_CHIEF"] > fee["ATTENDING"] > fee["RESIDENT"] > 0
    assert {s.period for s in core.schedules.values()} == {"AM", "PM"}
    assert {s.slot_mode for s in core.schedules.values()} == {
        "UNLIMITED",
        "SESSION",
        "TIMED",
        "NUMBERED",
    }
    assert {s.date for s in core.schedules.values()} == {
        DAY + dt.timedelta(days=n) for n in range(7)
    }
    numbered = next(s for s in core.schedules.values() if s.slot_mode == "NUMBERED")
    tickets = [s.ticket_number for s in core.slots_of(numbered.schedule_id)]
    assert tickets == list(range(1, numbered.capacity + 1))
    gyn = [s for s in core.schedules.values() if s.dept_id == "0401"]
    assert gyn
    assert all(s.required_gender == "F" for s in gyn)


def test_patients_have_valid_id_cards_and_phones():
    core = HisCore(2, today=DAY)
    for p in core.patients.values():
        assert is_valid_id_card(p.id_number), p.id_number
        assert p.id_number[6:14] == p.birth_date.strftime("%Y%m%d")
        assert (int(p.id_number[16]) % 2 == 1) == (p.gender == "M")
        assert len(p.phone) == 11
        assert p.phone[0] == "1"
        assert p.phone.isdigit()
    assert any(p.birth_date > DAY - dt.timedelta(days=365 * 14) for p in core.patients.values())


def test_id_card_check_digit_known_value():
    # The worked example of GB 11643-1999.
    assert id_card_check_digit("11010519491231002") == "X"
    assert is_valid_id_card("11010519491231002X")
    assert not is_valid_id_card("110105194912310021")
    assert not is_valid_id_card("11010519491331002X")  # month 13
    assert not is_valid_id_card("1101051949123100")


def test_reports_have_ranges_flags_and_archived_ones():
    core = HisCore(3, today=DAY)
    labs = [r for r in core.reports.values() if r.lab]
    observations = [o for r in labs for o in r.lab.observations]
    assert observations
    assert all(o.range_text and o.unit for o in observations)
    assert {"N", "H", "L"} <= {o.flag for o in observations}
    assert any(r.imaging and r.imaging.conclusion for r in core.reports.values())
    assert any(r.archived for r in core.reports.values())
    assert any(r.status == "REGISTERED" and r.expected_time for r in core.reports.values())
    assert all(len(core.unpaid_bills(p)) == 2 for p in core.patients)


def test_public_surface_is_pinned():
    assert tools.his_sim.__all__ == [
        "SOAP_NS",
        "SOAP_PATH",
        "WRITE_OPERATIONS",
        "WS_NS",
        "ArchiveReport",
        "DbHis",
        "Fault",
        "HisCore",
        "HisCounts",
        "HisError",
        "Latency",
        "Outage",
        "RenameField",
        "RequestRecord",
        "RestHis",
        "SimBase",
        "SoapHis",
        "TimeoutAfterCommit",
        "fault_from_json",
        "id_card_check_digit",
        "is_valid_id_card",
        "main",
        "make_simulator",
    ]


async def test_cli_runs_a_simulator_until_terminated():
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.his_sim",
        "--dialect",
        "soap",
        "--port",
        "0",
        "--seed",
        "4",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "his_sim soap seed=4 ready at http://127.0.0.1:" in line, line
        url = line.rsplit(" ", 1)[-1].strip()
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/_admin/info") as resp,
        ):
            assert (await resp.json())["seed"] == 4
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def test_cli_refuses_bad_arguments():
    from tools.his_sim import main

    assert main(["--dialect", "rest", "--db-url", "sqlite+aiosqlite:///x.db"]) == 2


async def test_same_seed_gives_the_same_wire_data():
    async def snapshot(seed):
        async with RestHis(seed=seed, today=DAY) as his, aiohttp.ClientSession() as session:
            out = []
            for path in ("/depts", "/doctors", "/schedules"):
                async with session.get(his.base_url + "/openapi/v3" + path) as resp:
                    out.append(await resp.json())
            return out

    first = await snapshot(8)
    assert first == await snapshot(8)
    assert first != await snapshot(9)
