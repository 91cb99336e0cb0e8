"""Reads of the read store as the patient API will serve them."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.readstore import (
    HospitalRecord,
    QueryError,
    ReadStore,
    UnknownHospital,
    load_hospitals,
    pinyin_initials,
)
from cloud.sync.testing import SyntheticHospital
from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import directory_pb2
from mesh.config import ConfigError

H = "city-first"
ZONE = "Asia/Shanghai"

HOSPITALS = [
    HospitalRecord(hospital_id=H, name="滨江市第一人民医院", aliases=("市一院",),
                   region_code="330106", features=("appointment", "payment")),
    HospitalRecord(hospital_id="river-county", name="长河县人民医院", aliases=("县医院",),
                   region_code="330122", features=("appointment",)),
    HospitalRecord(hospital_id="lakeside", name="湖畔社区卫生服务中心",
                   aliases=("湖畔诊所", "第一诊所"), region_code="440305", features=("reports",)),
]  # fmt: skip


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[ReadStore]:
    online: set[str] = {H}

    async def check(ids: Sequence[str]) -> set[str]:
        return online & set(ids)

    store = await ReadStore.open(db_engine, online=check)
    await store.put_hospitals(HOSPITALS)
    yield store
    await store.close()


async def sync(store: ReadStore, hospital: SyntheticHospital) -> None:
    change_pass = await store.begin_pass(hospital.hospital_id, (1, 2, 3, 4))
    request = directory_pb2.GetChangesRequest(since=change_pass.since, page_size=5000)
    assert await change_pass.apply(hospital.get_changes(request))


def test_pinyin_initials_are_what_patients_type() -> None:
    assert pinyin_initials("滨江市第一人民医院") == "bjsdyrmyy"
    assert pinyin_initials("重庆医科大学附属第一医院") == "cqykdxfsdyyy"
    assert pinyin_initials("协和 医院(东院)") == "xhyydy"
    assert pinyin_initials("A座 301") == "az301"


async def ids(page) -> list[str]:
    return [h.hospital_id for h in page.hospitals]


async def test_search_by_name_alias_initials_region_and_features(store: ReadStore) -> None:
    q = store.queries
    assert await ids(await q.search_hospitals()) == ["city-first", "lakeside", "river-county"]
    assert await ids(await q.search_hospitals(query="人民医院")) == ["city-first", "river-county"]
    assert await ids(await q.search_hospitals(query="县医院")) == ["river-county"]
    assert await ids(await q.search_hospitals(query="BJSD")) == ["city-first"]
    assert await ids(await q.search_hospitals(query="syy")) == ["city-first"]  # alias 市一院
    assert await ids(await q.search_hospitals(region_code="33")) == ["city-first", "river-county"]
    assert await ids(await q.search_hospitals(features=["payment"])) == ["city-first"]
    # Name matches come before alias matches.
    page = await q.search_hospitals(query="第一")
    assert await ids(page) == ["city-first", "lakeside"]
    assert page.total_size == 2
    found = (await q.search_hospitals(query="bjs")).hospitals[0]
    assert found.online_booking_available
    assert list(found.features) == [
        patient_pb2.HOSPITAL_FEATURE_APPOINTMENT,
        patient_pb2.HOSPITAL_FEATURE_PAYMENT,
    ]
    assert not (await q.search_hospitals(query="湖畔")).hospitals[0].online_booking_available


@pytest.mark.parametrize("text", ["%", "_", "' OR 1=1 --", "\\", "%_%"])
async def test_sql_looking_and_wildcard_queries_match_literally(store: ReadStore, text) -> None:
    assert (await store.queries.search_hospitals(query=text)).hospitals == []


async def test_search_pages_with_a_cursor(store: ReadStore) -> None:
    q = store.queries
    first = await q.search_hospitals(limit=2)
    assert len(first.hospitals) == 2
    assert first.next_cursor
    assert first.total_size == 3
    second = await q.search_hospitals(limit=2, cursor=first.next_cursor)
    assert await ids(second) == ["river-county"]
    assert second.next_cursor == ""
    with pytest.raises(QueryError, match="page_token"):
        await q.search_hospitals(cursor="garbage!")
    dep_cursor = (await _departments_cursor(store)).next_cursor
    with pytest.raises(QueryError, match="another query"):
        await q.search_hospitals(cursor=dep_cursor)


async def _departments_cursor(store: ReadStore):
    await sync(store, SyntheticHospital(H, doctors=6, days=1, slots_per_session=1))
    return await store.queries.list_departments(H, limit=1)


async def test_departments_doctors_and_as_of(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=4, days=2, slots_per_session=2)
    q = store.queries
    before = await q.list_departments(H)
    assert before.departments == []
    assert before.as_of is None
    await sync(store, hospital)
    deps = await q.list_departments(H)
    assert [d.name for d in deps.departments] == ["科室0", "科室1"]
    assert deps.as_of is not None
    doctors = await q.list_doctors(H, department_id=f"{H}-dep-1")
    assert [d.doctor_id for d in doctors.doctors] == [f"{H}-doc-1", f"{H}-doc-3"]
    assert list(doctors.doctors[0].department_ids) == [f"{H}-dep-1"]
    assert doctors.doctors[0].title == "主任医师"
    paged = await q.list_doctors(H, limit=3)
    rest = await q.list_doctors(H, limit=3, cursor=paged.next_cursor)
    assert len(paged.doctors) == 3
    assert len(rest.doctors) == 1
    assert rest.next_cursor == ""
    with pytest.raises(UnknownHospital):
        await q.list_departments("nowhere")


async def test_doctors_with_available_slots(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=2, days=1, slots_per_session=2)
    for slot_id in hospital.ids(directory_pb2.ENTITY_KIND_SLOT):
        if slot_id.startswith(f"{H}-sch-1-"):
            hospital.edit_silently(
                directory_pb2.ENTITY_KIND_SLOT,
                slot_id,
                status=directory_pb2.SLOT_STATUS_BUSY,
                remaining=0,
            )
    await sync(store, hospital)
    found = await store.queries.list_doctors(H, only_with_available_slots=True)
    doc0_free = any(
        hospital.get(directory_pb2.ENTITY_KIND_SLOT, s).status == directory_pb2.SLOT_STATUS_FREE
        for s in hospital.ids(directory_pb2.ENTITY_KIND_SLOT)
        if s.startswith(f"{H}-sch-0-")
    )
    assert [d.doctor_id for d in found.doctors] == ([f"{H}-doc-0"] if doc0_free else [])


async def test_slots_in_the_hospitals_zone_with_paging_and_filters(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=2, days=3, slots_per_session=4)
    await sync(store, hospital)
    q = store.queries
    start = hospital.start
    page = await q.list_slots(H, start_date=start, doctor_id=f"{H}-doc-0")
    assert len(page.slots) == 4
    first = page.slots[0]
    assert first.kind == patient_pb2.SLOT_KIND_TIMED
    assert (first.start_time.hours, first.start_time.minutes) == (8, 0)
    assert (first.end_time.hours, first.end_time.minutes) == (8, 15)
    assert (first.date.year, first.date.month, first.date.day) == (
        start.year, start.month, start.day,
    )  # fmt: skip
    assert first.period == patient_pb2.DAY_PERIOD_MORNING
    assert first.fee.units == 50
    assert first.fee.currency_code == "CNY"
    assert first.registration_type == "专家号"
    assert page.as_of is not None

    everything = []
    cursor = ""
    while True:
        got = await q.list_slots(
            H, start_date=start, end_date=start + dt.timedelta(days=2),
            department_id=f"{H}-dep-0", limit=5, cursor=cursor,
        )  # fmt: skip
        everything.extend(got.slots)
        cursor = got.next_cursor
        if not cursor:
            break
    assert len(everything) == 2 * 3 * 4  # one department: both doctors hold its clinics
    keys = [((s.date.year, s.date.month, s.date.day), s.start_time.hours, s.start_time.minutes,
             s.doctor_id, s.slot_id) for s in everything]  # fmt: skip
    assert keys == sorted(keys)

    available = await q.list_slots(
        H, start_date=start, end_date=start + dt.timedelta(days=2), doctor_id=f"{H}-doc-0",
        only_available=True, limit=500,
    )  # fmt: skip
    assert all(s.availability == patient_pb2.SLOT_AVAILABILITY_AVAILABLE for s in available.slots)
    free = [
        s for s in hospital.ids(directory_pb2.ENTITY_KIND_SLOT)
        if s.startswith(f"{H}-sch-0-")
        and hospital.get(directory_pb2.ENTITY_KIND_SLOT, s).status == directory_pb2.SLOT_STATUS_FREE
    ]  # fmt: skip
    assert sorted(s.slot_id for s in available.slots) == sorted(free)


async def test_slot_filters_are_validated(store: ReadStore) -> None:
    q = store.queries
    today = dt.date.today()
    with pytest.raises(QueryError, match="department_id"):
        await q.list_slots(H, start_date=today)
    with pytest.raises(QueryError, match="end_date: is before"):
        await q.list_slots(
            H, start_date=today, end_date=today - dt.timedelta(days=1), doctor_id="d"
        )
    with pytest.raises(QueryError, match="end_date: more than 31 days"):
        await q.list_slots(
            H, start_date=today, end_date=today + dt.timedelta(days=32), doctor_id="d"
        )
    with pytest.raises(QueryError, match="page_size"):
        await q.list_slots(H, start_date=today, doctor_id="d", limit=-1)
    with pytest.raises(UnknownHospital):
        await q.list_slots("nowhere", start_date=today, doctor_id="d")


def test_master_data_file_errors_name_file_line_and_key(tmp_path: Path) -> None:
    good = tmp_path / "hospitals.toml"
    good.write_text(
        '[[hospital]]\nid = "a"\nname = "甲医院"\nlocation = { lat = 30.1, lng = 120.2 }\n'
        'features = ["appointment"]\n\n[[hospital]]\nid = "b"\nname = "乙医院"\n',
        encoding="utf-8",
    )
    records = load_hospitals(good)
    assert [r.hospital_id for r in records] == ["a", "b"]
    assert records[0].lat == 30.1
    assert records[0].time_zone == ZONE

    def error(text: str) -> str:
        bad = tmp_path / "bad.toml"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_hospitals(bad)
        return str(info.value)

    assert error('[[hospital]]\nid = "a"\nname = "x"\n\n[[hospital]]\nid = "b"\nname = "y"\n'
                 'region_code = "44"\n').endswith(
        "bad.toml:8: hospital[1].region_code: '44' is invalid: six digits (GB/T 2260)"
    )  # fmt: skip
    assert "bad.toml:3: hospital[0].name: required" in error('[[hospital]]\nid = "a"\nname = ""\n')
    assert "hospital[1].id: duplicate id 'a'" in error(
        '[[hospital]]\nid = "a"\nname = "x"\n[[hospital]]\nid = "a"\nname = "y"\n'
    )
    assert "hospital[0].colour: unknown setting" in error(
        '[[hospital]]\nid = "a"\nname = "x"\ncolour = 1\n'
    )
    assert "'vip' is not one of appointment" in error(
        '[[hospital]]\nid = "a"\nname = "x"\nfeatures = ["vip"]\n'
    )
    assert "is not an IANA time zone" in error(
        '[[hospital]]\nid = "a"\nname = "x"\ntime_zone = "Mars/Olympus"\n'
    )
    assert "invalid TOML" in error("[[hospital]\n")
