"""The patient API's checks: every violation of a request named at once, before the store.

The servicer runs over a real read store (SQLite) with one hospital; the caller is let in
by a stand-in for the authenticator (a seam we own); the context records the status the
cloud's one error mapping ends the call with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from google.type import date_pb2

from cloud.patient_api import PageTokens, PatientApiServicer, ReadCache
from cloud.readstore import HospitalRecord, ReadStore
from hplus.cloud.v1 import patient_pb2

TODAY = dt.date(2026, 12, 6)


class Aborted(Exception):
    pass


class Context:
    """Records ``abort`` as the error mapping calls it."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.status = status_pb2.Status()

    async def abort(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        self.code = code
        for key, value in trailers:
            if key == "grpc-status-details-bin":
                self.status = status_pb2.Status.FromString(value)
        raise Aborted(details)

    def violations(self) -> dict[str, str]:
        for packed in self.status.details:
            if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                return {v.field: v.description for v in bad.field_violations}
        return {}


class LetIn:
    """The authenticator's seam: every caller is an app's."""

    def __init__(self) -> None:
        self.calls = 0

    async def caller(self, context: Any, *, account: bool) -> object:
        self.calls += 1
        return object()


@pytest.fixture
async def servicer(tmp_path: Path) -> AsyncIterator[tuple[PatientApiServicer, LetIn]]:
    store = await ReadStore.open(f"sqlite+aiosqlite:///{tmp_path / 'rs.db'}")
    await store.put_hospitals([HospitalRecord(hospital_id="h1", name="滨江市第一人民医院")])
    auth = LetIn()
    try:
        yield (
            PatientApiServicer(
                auth=auth,  # type: ignore[arg-type]
                queries=store.queries,
                tokens=PageTokens("secret"),
                cache=ReadCache(ttl=2.0),
                today=lambda: TODAY,
            ),
            auth,
        )
    finally:
        await store.close()


async def refused(servicer: PatientApiServicer, method: str, request: Any) -> Context:
    context = Context()
    with pytest.raises(Aborted):
        await getattr(servicer, method)(request, context)
    return context


def day(d: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (patient_pb2.SearchHospitalsRequest(query="1' OR '1'='1"), {"query": "looks like SQL"}),
        (patient_pb2.SearchHospitalsRequest(query="a;b"), {"query": "looks like SQL"}),
        (patient_pb2.SearchHospitalsRequest(query="医院 -- x"), {"query": "looks like SQL"}),
        (patient_pb2.SearchHospitalsRequest(query="医院%"), {"query": "PERCENT SIGN"}),
        (patient_pb2.SearchHospitalsRequest(query="x" * 101), {"query": "longer than 100"}),
        (patient_pb2.SearchHospitalsRequest(region_code="4403055"), {"region_code": "1-6 digits"}),
        (patient_pb2.SearchHospitalsRequest(region_code="\uff14\uff14"),  # fullwidth 4s
         {"region_code": "1-6 digits"}),
        (patient_pb2.SearchHospitalsRequest(features=[0, 99]),
         {"features[0]": "not a known", "features[1]": "not a known"}),
        (patient_pb2.SearchHospitalsRequest(page_size=-5, page_token="garbage"),
         {"page_size": "negative", "page_token": "not a token this server issued"}),
    ],
)  # fmt: skip
async def test_search_violations_are_named(
    servicer: tuple[PatientApiServicer, LetIn], request_: Any, expected: dict[str, str]
) -> None:
    context = await refused(servicer[0], "SearchHospitals", request_)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    found = context.violations()
    assert set(found) == set(expected)
    for field, text in expected.items():
        assert text in found[field]
    assert servicer[1].calls == 1  # authenticated first


async def test_names_that_patients_type_pass(servicer: tuple[PatientApiServicer, LetIn]) -> None:
    for text in ("滨江市第一人民医院", "bjsdy", "市一院 (东院)", "St. Mary-Ann", "第一、第二"):
        page = await servicer[0].SearchHospitals(
            patient_pb2.SearchHospitalsRequest(query=text), Context()
        )
        assert isinstance(page, patient_pb2.SearchHospitalsResponse)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (patient_pb2.ListSlotsRequest(),
         {"hospital_id": "required", "department_id": "required unless doctor_id",
          "start_date": "required"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h1", doctor_id="d", start_date=day(TODAY),
                                      end_date=day(TODAY - dt.timedelta(days=1))),
         {"end_date": "is before start_date"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h1", doctor_id="d", start_date=day(TODAY),
                                      end_date=day(TODAY + dt.timedelta(days=32))),
         {"end_date": "more than 31 days after start_date"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h1", doctor_id="d",
                                      start_date=date_pb2.Date(year=1, month=1, day=1),
                                      end_date=date_pb2.Date(year=9999, month=12, day=31)),
         {"start_date": "days from today", "end_date": "days from today"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h1", doctor_id="d",
                                      start_date=date_pb2.Date(year=2026, month=2, day=30)),
         {"start_date": "2026-02-30 is not a date"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h1", doctor_id="d",
                                      start_date=date_pb2.Date(year=2026, month=12)),
         {"start_date": "full date"}),
        (patient_pb2.ListSlotsRequest(hospital_id="h" * 129, doctor_id="d\x00",
                                      start_date=day(TODAY)),
         {"hospital_id": "longer than 128", "doctor_id": "control characters"}),
    ],
)  # fmt: skip
async def test_slot_violations_are_named(
    servicer: tuple[PatientApiServicer, LetIn], request_: Any, expected: dict[str, str]
) -> None:
    context = await refused(servicer[0], "ListSlots", request_)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    found = context.violations()
    assert set(found) == set(expected), found
    for field, text in expected.items():
        assert text in found[field]


async def test_an_unknown_hospital_is_not_found_with_resource_info(
    servicer: tuple[PatientApiServicer, LetIn],
) -> None:
    for method, request in (
        ("ListDepartments", patient_pb2.ListDepartmentsRequest(hospital_id="h404")),
        ("ListDoctors", patient_pb2.ListDoctorsRequest(hospital_id="h404")),
        ("ListSlots", patient_pb2.ListSlotsRequest(hospital_id="h404", department_id="x",
                                                   start_date=day(TODAY))),
    ):  # fmt: skip
        context = await refused(servicer[0], method, request)
        assert context.code == grpc.StatusCode.NOT_FOUND
        info = error_details_pb2.ResourceInfo()
        assert any(p.Unpack(info) for p in context.status.details if p.Is(info.DESCRIPTOR))
        assert (info.resource_type, info.resource_name) == ("hospital", "h404")


async def test_a_known_hospital_without_data_answers_empty(
    servicer: tuple[PatientApiServicer, LetIn],
) -> None:
    reply = await servicer[0].ListSlots(
        patient_pb2.ListSlotsRequest(
            hospital_id="h1", department_id="0101", start_date=day(TODAY), page_size=10_000
        ),
        Context(),
    )
    assert list(reply.slots) == []
    assert reply.next_page_token == ""
    assert not reply.HasField("as_of")  # never synced
