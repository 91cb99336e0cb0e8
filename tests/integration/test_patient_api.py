"""The patient API on a real node over TLS: simulated hospitals synced through real tunnels,
read with a real gRPC client and an app key; page tokens, bad input, offline hospitals, and
orders and reports handed to the parts that own them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status

from cloud.accounts import Caller, Channel, Rate
from cloud.config import NodeConfig, PatientApiConfig, SyncConfig
from cloud.node import CloudNode
from cloud.readstore import HospitalRecord, pinyin_initials
from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2, patient_pb2_grpc
from mesh import errors
from tests.integration.hospital_env import FAST
from tests.support.waiting import until
from tools.fleet_sim import DirectoryShape, Fleet, FleetConfig, fleet_hospitals

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")  # the simulated hospitals' zone

SYNC = SyncConfig(slot_interval=0.5, directory_interval=1.0, drift_interval=3600.0)
SHAPE = DirectoryShape(doctors=3, days=3, slots=4, capacity=2)
T = 10.0


class FakeOrders:
    """The orders part, at the seam we own: records what the servicer hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    async def book_appointment(
        self, request: patient_pb2.BookAppointmentRequest, caller: Caller
    ) -> patient_pb2.BookAppointmentResponse:
        self.calls.append(("book", request.request_id, caller.account_id))
        return patient_pb2.BookAppointmentResponse(
            order=patient_pb2.Order(order_id=f"order-for-{request.slot_id}")
        )

    async def cancel_appointment(
        self, request: patient_pb2.CancelAppointmentRequest, caller: Caller
    ) -> patient_pb2.CancelAppointmentResponse:
        self.calls.append(("cancel", request.order_id, caller.account_id))
        return patient_pb2.CancelAppointmentResponse()

    async def pay_order(
        self, request: patient_pb2.PayOrderRequest, caller: Caller
    ) -> patient_pb2.PayOrderResponse:
        self.calls.append(("pay", request.order_id, caller.account_id))
        return patient_pb2.PayOrderResponse()

    async def get_order(
        self, request: patient_pb2.GetOrderRequest, caller: Caller
    ) -> patient_pb2.GetOrderResponse:
        self.calls.append(("get", request.order_id, caller.account_id))
        raise errors.NotFound("no such order", resource=errors.Resource("order", request.order_id))

    async def list_orders(
        self, request: patient_pb2.ListOrdersRequest, caller: Caller
    ) -> patient_pb2.ListOrdersResponse:
        self.calls.append(("list", "", caller.account_id))
        return patient_pb2.ListOrdersResponse()


@dataclass
class Env:
    node: CloudNode
    fleet: Fleet
    channel: grpc.aio.Channel
    key: str
    app_id: str
    ids: list[str]

    @property
    def api(self) -> patient_pb2_grpc.PatientApiServiceStub:
        return patient_pb2_grpc.PatientApiServiceStub(self.channel)

    def md(self, key: str | None = None, token: str = "") -> tuple[tuple[str, str], ...]:
        out = [("x-hplus-app-key", self.key if key is None else key)]
        if token:
            out.append(("authorization", f"Bearer {token}"))
        return tuple(out)


@asynccontextmanager
async def running(
    tmp_path: Path, *, orders: FakeOrders | None = None, hospitals: int = 2
) -> AsyncIterator[Env]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=1.0,
        sync=SYNC,
        patient_api=PatientApiConfig(read_cache_seconds=2.0),
    )
    node = CloudNode(config, tunnel_config=FAST)
    async with node:
        # The servicer's collaborators, replaced by what the test gives: a fake orders part
        # (a seam we own), and no reports part, to see the servicer's answer without one.
        assert node.patient_api is not None
        node.patient_api.orders = orders
        node.patient_api.reports = None
        assert node.readstore is not None
        assert node.credentials is not None
        assert node.accounts is not None
        assert node.tls is not None
        sims = fleet_hospitals(hospitals, seed=3, prefix="pa-")
        await node.readstore.put_hospitals(
            [
                HospitalRecord(
                    hospital_id=h.hospital_id,
                    name=h.name,
                    region_code=h.region_code,
                    features=("appointment",),
                )
                for h in sims
            ]
        )
        credentials = {
            h.hospital_id: (await node.credentials.issue(h.hospital_id)).token for h in sims
        }
        fleet = Fleet(
            FleetConfig(
                gateways=(f"localhost:{node.port}",),
                ca_cert=node.tls.ca_cert.read_bytes(),
                shape=SHAPE,
                change_rate=0.0,
                tunnel=FAST,
                backoff_initial=0.1,
                backoff_max=0.5,
            ),
            sims,
            credentials,
        )
        issued = await node.accounts.apps.issue(
            f"pa-{uuid.uuid4().hex[:6]}", Channel.WEB, Rate(1000, 1.0)
        )
        creds = grpc.ssl_channel_credentials(root_certificates=node.tls.ca_cert.read_bytes())
        try:
            assert await fleet.start() == hospitals
            async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as channel:
                yield Env(
                    node,
                    fleet,
                    channel,
                    issued.key,
                    issued.app.app_id,
                    [h.hospital_id for h in sims],
                )
        finally:
            await fleet.shutdown(0.0)


def status_of(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, list[object]]:
    status = rpc_status.from_call(err)
    assert status is not None, err
    details: list[object] = []
    for packed in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.ErrorInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    return err.code(), details


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    code, details = status_of(err)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, err
    bad = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
    assert bad, err
    return {v.field: v.description for v in bad[0].field_violations}


def reason(err: grpc.aio.AioRpcError) -> str:
    _, details = status_of(err)
    return next((d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo)), "")


def date(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def synced(env: Env) -> bool:
    assert env.node.readstore is not None
    states = await env.node.readstore.status()
    done = {s.hospital_id for s in states if s.last_success is not None}
    return set(env.ids) <= done


@pytest.mark.timeout(180)
async def test_reads_come_from_the_store_after_a_sync_and_follow_the_hospital(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as env:
        await until(lambda: synced(env), limit=60)
        api = env.api
        today = dt.datetime.now(ZONE).date()
        first = env.ids[0]
        sim = env.fleet.edges[first]

        # SearchHospitals: by name, by pinyin initials of the name, by region.
        name = sim.hospital.name
        found = await api.SearchHospitals(
            patient_pb2.SearchHospitalsRequest(query=name[2:6]), metadata=env.md(), timeout=T
        )
        assert first in [h.hospital_id for h in found.hospitals]
        assert all(h.online_booking_available for h in found.hospitals)
        initials = pinyin_initials(name)
        found = await api.SearchHospitals(
            patient_pb2.SearchHospitalsRequest(query=initials), metadata=env.md(), timeout=T
        )
        assert first in [h.hospital_id for h in found.hospitals]
        found = await api.SearchHospitals(
            patient_pb2.SearchHospitalsRequest(region_code=sim.hospital.region_code[:2]),
            metadata=env.md(),
            timeout=T,
        )
        assert first in [h.hospital_id for h in found.hospitals]
        assert all(h.region_code.startswith(sim.hospital.region_code[:2]) for h in found.hospitals)

        # ListDepartments and ListDoctors from the store, as the hospital publishes them.
        deps = await api.ListDepartments(
            patient_pb2.ListDepartmentsRequest(hospital_id=first), metadata=env.md(), timeout=T
        )
        assert [d.name for d in deps.departments] == [d.name for d in sim.his.departments()]
        assert deps.HasField("as_of")
        doctors = await api.ListDoctors(
            patient_pb2.ListDoctorsRequest(hospital_id=first), metadata=env.md(), timeout=T
        )
        assert sorted(d.name for d in doctors.doctors) == sorted(d.name for d in sim.his.doctors())
        doctor = doctors.doctors[0]

        # ListSlots: one doctor over the whole range, paged by signed tokens.
        request = patient_pb2.ListSlotsRequest(
            hospital_id=first,
            doctor_id=doctor.doctor_id,
            start_date=date(today),
            end_date=date(today + dt.timedelta(days=SHAPE.days - 1)),
            page_size=5,
        )
        seen: list[str] = []
        page = await api.ListSlots(request, metadata=env.md(), timeout=T)
        tokens = 0
        while True:
            assert len(page.slots) <= 5
            seen += [s.slot_id for s in page.slots]
            if not page.next_page_token:
                break
            tokens += 1
            follow = patient_pb2.ListSlotsRequest()
            follow.CopyFrom(request)
            follow.page_token = page.next_page_token
            page = await api.ListSlots(follow, metadata=env.md(), timeout=T)
        # The same first page again within the cache's TTL: served from the node's cache.
        assert env.node.patient_api is not None
        once = await api.ListSlots(request, metadata=env.md(), timeout=T)
        hits = env.node.patient_api.cache.hits
        again = await api.ListSlots(request, metadata=env.md(), timeout=T)
        assert [s.slot_id for s in again.slots] == [s.slot_id for s in once.slots] == seen[:5]
        assert env.node.patient_api.cache.hits == hits + 1
        expected = SHAPE.days * 2 * SHAPE.slots
        assert len(seen) == len(set(seen)) == expected
        assert tokens == (expected - 1) // 5

        # The token of that query does not continue another one.
        other = patient_pb2.ListSlotsRequest()
        other.CopyFrom(request)
        other.doctor_id = doctors.doctors[1].doctor_id
        first_page = await api.ListSlots(request, metadata=env.md(), timeout=T)
        other.page_token = first_page.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.ListSlots(other, metadata=env.md(), timeout=T)
        assert "belongs to another query" in violations(caught.value)["page_token"]

        # remaining > 0 only, then a change at the hospital shows once the sync carries it.
        only = patient_pb2.ListSlotsRequest(
            hospital_id=first,
            doctor_id=doctor.doctor_id,
            start_date=date(today),
            only_available=True,
            page_size=500,
        )
        before = await api.ListSlots(only, metadata=env.md(), timeout=T)
        assert before.slots
        assert all(s.remaining > 0 for s in before.slots)
        # Slot ids are "<schedule id>-<n>" at the simulated hospital: suspend one session.
        schedule_id = before.slots[0].slot_id.rsplit("-", 1)[0]
        j = sim.his.schedule_index(schedule_id)
        assert j is not None
        sim.his.set_suspended(j, True)

        async def gone() -> bool:
            page = await api.ListSlots(only, metadata=env.md(), timeout=T)
            return not any(s.slot_id.startswith(schedule_id + "-") for s in page.slots)

        await until(gone, limit=30)

        # Unknown hospital: NOT_FOUND naming it.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.ListDepartments(
                patient_pb2.ListDepartmentsRequest(hospital_id="no-such-hospital"),
                metadata=env.md(),
                timeout=T,
            )
        code, details = status_of(caught.value)
        assert code == grpc.StatusCode.NOT_FOUND
        info = next(d for d in details if isinstance(d, error_details_pb2.ResourceInfo))
        assert (info.resource_type, info.resource_name) == ("hospital", "no-such-hospital")

        # An offline hospital stays listed, without online booking.
        second = env.ids[1]
        await env.fleet.edges[second].offline()
        assert env.node.gateway is not None

        async def listed_offline() -> bool:
            found = await api.SearchHospitals(
                patient_pb2.SearchHospitalsRequest(), metadata=env.md(), timeout=T
            )
            online = {h.hospital_id: h.online_booking_available for h in found.hospitals}
            return online.get(second) is False and online.get(first) is True

        await until(listed_offline, limit=20)
        # Its slots are still read from the store.
        slots = await api.ListSlots(
            patient_pb2.ListSlotsRequest(
                hospital_id=second,
                department_id=deps.departments[0].department_id,
                start_date=date(today),
                end_date=date(today + dt.timedelta(days=2)),
            ),
            metadata=env.md(),
            timeout=T,
        )
        assert slots.HasField("as_of")


@pytest.mark.timeout(120)
async def test_bad_input_gets_precise_statuses_and_keys_are_required(tmp_path: Path) -> None:
    async with running(tmp_path, hospitals=1) as env:
        api = env.api
        today = dt.datetime.now(dt.UTC).date()
        hospital = env.ids[0]

        async def refused(method: str, request: object) -> dict[str, str]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await getattr(api, method)(request, metadata=env.md(), timeout=T)
            return violations(caught.value)

        for sql in ("'; DROP TABLE rs_hospitals; --", "x' OR '1'='1", "a/*b*/", "人民\\"):
            bad = await refused("SearchHospitals", patient_pb2.SearchHospitalsRequest(query=sql))
            assert "looks like SQL" in bad["query"]
        bad = await refused(
            "SearchHospitals",
            patient_pb2.SearchHospitalsRequest(
                query="医院<script>",
                region_code="44a",
                features=[patient_pb2.HospitalFeature.Value("HOSPITAL_FEATURE_UNSPECIFIED")],
                page_size=-1,
                page_token="nonsense",
            ),
        )
        assert set(bad) == {"query", "region_code", "features[0]", "page_size", "page_token"}
        assert "not a token this server issued" in bad["page_token"]
        bad = await refused("SearchHospitals", patient_pb2.SearchHospitalsRequest(query="医" * 101))
        assert "longer than 100" in bad["query"]

        def slots(**kw: object) -> patient_pb2.ListSlotsRequest:
            return patient_pb2.ListSlotsRequest(hospital_id=hospital, **kw)  # type: ignore[arg-type]

        assert set(await refused("ListSlots", patient_pb2.ListSlotsRequest())) == {
            "hospital_id",
            "department_id",
            "start_date",
        }
        absurd = {
            "reversed": (
                slots(
                    doctor_id="D0000",
                    start_date=date(today),
                    end_date=date(today - dt.timedelta(days=1)),
                ),
                "end_date",
                "is before start_date",
            ),
            "too long": (
                slots(
                    doctor_id="D0000",
                    start_date=date(today),
                    end_date=date(today + dt.timedelta(days=40)),
                ),
                "end_date",
                "more than 31 days",
            ),
            "year 9999": (
                slots(doctor_id="D0000", start_date=date_pb2.Date(year=9999, month=12, day=31)),
                "start_date",
                "days from today",
            ),
            "no such day": (
                slots(
                    doctor_id="D0000", start_date=date_pb2.Date(year=today.year, month=2, day=30)
                ),
                "start_date",
                "is not a date",
            ),
            "partial": (
                slots(doctor_id="D0000", start_date=date_pb2.Date(year=2026, month=12)),
                "start_date",
                "full date",
            ),
        }
        for name, (request, field, text) in absurd.items():
            bad = await refused("ListSlots", request)
            assert text in bad.get(field, ""), (name, bad)
        bad = await refused(
            "ListDoctors",
            patient_pb2.ListDoctorsRequest(hospital_id="h" * 200, department_id="a\x01b"),
        )
        assert set(bad) == {"hospital_id", "department_id"}

        # A page size above the maximum is served as the maximum, not refused.
        fine = await api.SearchHospitals(
            patient_pb2.SearchHospitalsRequest(page_size=100_000), metadata=env.md(), timeout=T
        )
        assert [h.hospital_id for h in fine.hospitals] == [hospital]

        # The app key: missing, malformed, revoked.
        request = patient_pb2.SearchHospitalsRequest()
        for key, why in (("", "APP_KEY_MISSING"), ("hpk_nonsense", "APP_KEY_INVALID")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await api.SearchHospitals(request, metadata=env.md(key), timeout=T)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason(caught.value) == why
        assert env.node.accounts is not None
        await env.node.accounts.apps.revoke(env.app_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.SearchHospitals(request, metadata=env.md(), timeout=T)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(caught.value) == "APP_KEY_REVOKED"


async def sign_in(env: Env) -> str:
    accounts = account_pb2_grpc.AccountServiceStub(env.channel)
    started = await accounts.StartSignIn(
        account_pb2.StartSignInRequest(request_id=str(uuid.uuid4()), phone="+8613800138000"),
        metadata=env.md(),
        timeout=T,
    )
    lines = (env.node.config.data_dir / "sign-in-codes.log").read_text().splitlines()
    code = next(
        json.loads(x)["code"]
        for x in lines
        if json.loads(x)["challenge_id"] == started.challenge_id
    )
    done = await accounts.CompleteSignIn(
        account_pb2.CompleteSignInRequest(
            request_id=str(uuid.uuid4()), challenge_id=started.challenge_id, code=code
        ),
        metadata=env.md(),
        timeout=T,
    )
    return done.access_token


@pytest.mark.timeout(120)
async def test_orders_are_handed_to_the_orders_part_for_signed_in_accounts(
    tmp_path: Path,
) -> None:
    orders = FakeOrders()
    async with running(tmp_path, orders=orders, hospitals=1) as env:
        api = env.api
        book = patient_pb2.BookAppointmentRequest(request_id="r-1", slot_id="S-1")
        # No account: refused before the orders part sees anything.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.BookAppointment(book, metadata=env.md(), timeout=T)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(caught.value) == "TOKEN_MISSING"
        assert orders.calls == []

        token = await sign_in(env)
        booked = await api.BookAppointment(book, metadata=env.md(token=token), timeout=T)
        assert booked.order.order_id == "order-for-S-1"
        await api.CancelAppointment(
            patient_pb2.CancelAppointmentRequest(request_id="r-2", order_id="o-1"),
            metadata=env.md(token=token),
            timeout=T,
        )
        await api.PayOrder(
            patient_pb2.PayOrderRequest(request_id="r-3", order_id="o-1"),
            metadata=env.md(token=token),
            timeout=T,
        )
        await api.ListOrders(
            patient_pb2.ListOrdersRequest(), metadata=env.md(token=token), timeout=T
        )
        # The part's own tree errors leave through the one mapping.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.GetOrder(
                patient_pb2.GetOrderRequest(order_id="o-404"),
                metadata=env.md(token=token),
                timeout=T,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        accounts = {account for _, _, account in orders.calls}
        assert len(accounts) == 1
        assert None not in accounts
        assert [c[:2] for c in orders.calls] == [
            ("book", "r-1"),
            ("cancel", "o-1"),
            ("pay", "o-1"),
            ("list", ""),
            ("get", "o-404"),
        ]

        # No reports part (removed above): UNIMPLEMENTED naming it, after authentication.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.ListReports(patient_pb2.ListReportsRequest(), metadata=env.md(), timeout=T)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.GetReport(
                patient_pb2.GetReportRequest(), metadata=env.md(token=token), timeout=T
            )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "reports are not configured" in (caught.value.details() or "")
        assert reason(caught.value) == "REPORTS_NOT_CONFIGURED"


@pytest.mark.timeout(120)
async def test_without_an_orders_part_orders_are_unimplemented(tmp_path: Path) -> None:
    async with running(tmp_path, hospitals=1) as env:
        token = await sign_in(env)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.api.BookAppointment(
                patient_pb2.BookAppointmentRequest(request_id="r-1"),
                metadata=env.md(token=token),
                timeout=T,
            )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "orders are not configured" in (caught.value.details() or "")
        assert env.node.service_names.count("hplus.cloud.v1.PatientApiService") == 1
