"""The fleet simulator's parts: its in-memory HIS as a feed source, hospitals, control API."""

from __future__ import annotations

import datetime as dt
import random
import tomllib
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from aiohttp import web

from frontend_server.directory import directory_digest, get_changes
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from mesh.digest import bucket_digests, bucket_of, content_digest
from tests.support.feed import CloudModel, Fetch
from tools.fleet_sim import (
    DirectoryShape,
    Fleet,
    FleetConfig,
    MemoryHis,
    control_app,
    fleet_hospitals,
    hospitals_toml,
)
from tools.fleet_sim.services import SERVICES

SHAPE = DirectoryShape(doctors=3, days=3, slots=4, capacity=2)
TODAY = dt.date(2026, 3, 2)
SLOT = directory_pb2.ENTITY_KIND_SLOT
SCHEDULE = directory_pb2.ENTITY_KIND_SCHEDULE
DOCTOR = directory_pb2.ENTITY_KIND_DOCTOR


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def his() -> MemoryHis:
    return MemoryHis(7, SHAPE, first_day=TODAY, clock=Clock())


def feed(his: MemoryHis) -> Fetch:
    async def fetch(request: directory_pb2.GetChangesRequest) -> directory_pb2.GetChangesResponse:
        return await get_changes(his, request, today=TODAY)

    return fetch


async def test_a_full_pass_is_the_whole_directory_and_matches_the_digest(his: MemoryHis) -> None:
    cloud = CloudModel()
    page = await cloud.sync(feed(his), page_size=50)
    assert page.snapshot
    entities = 6 + 3 + 3 * 3 * 2 + 3 * 3 * 2 * 4
    assert len(cloud.held) == entities == len(set(cloud.delivered()))
    assert all(c.content_digest == content_digest(getattr(c, c.WhichOneof("change")))
               for c in cloud.changes())  # fmt: skip
    digest = await directory_digest(
        his, directory_pb2.GetDirectoryDigestRequest(bucket_count=4), today=TODAY
    )
    for kind in digest.kinds:
        mine = [(k[1], d) for k, d in cloud.state().items() if k[0] == kind.kind]
        assert list(kind.bucket_digests) == bucket_digests(mine, 4)
    slots = [c.slot for c in cloud.changes() if c.kind == SLOT]
    assert {s.schedule_id for s in slots} == {
        c.entity_id for c in cloud.changes() if c.kind == SCHEDULE
    }
    filtered = await get_changes(
        his,
        directory_pb2.GetChangesRequest(
            page_size=5000, buckets=directory_pb2.BucketFilter(bucket_count=4, buckets=[2])
        ),
        today=TODAY,
    )
    assert {c.entity_id for c in filtered.changes} == {
        k[1] for k in cloud.held if bucket_of(k[1], 4) == 2
    }


async def test_passes_read_one_point_while_the_hospital_changes(his: MemoryHis) -> None:
    before = CloudModel()
    await before.sync(feed(his))
    rng = random.Random(3)
    added: list[str] = []

    async def churn(page_number: int) -> None:
        for _ in range(5):
            his.change(rng)
        his.set_suspended(page_number, True)
        added.append(his.add_doctor())

    cloud = CloudModel()
    await cloud.sync(feed(his), page_size=10, between_pages=churn)
    assert len(cloud.pages) > 5
    assert cloud.state() == before.state()  # the directory when the pass began
    assert not any((DOCTOR, d) in cloud.held for d in added)
    incremental = await cloud.sync(feed(his), page_size=7)
    assert not incremental.snapshot
    changed = {(c.kind, c.entity_id): c for c in cloud.changes()}
    assert all((DOCTOR, d) in changed for d in added)
    suspended = [c for c in changed.values() if c.kind == SCHEDULE and c.schedule.status ==
                 directory_pb2.SCHEDULE_STATUS_SUSPENDED]  # fmt: skip
    assert suspended
    for schedule in suspended:
        slots = [c.slot for c in changed.values() if c.kind == SLOT
                 and c.slot.schedule_id == schedule.entity_id]  # fmt: skip
        assert slots
        assert all(s.status == directory_pb2.SLOT_STATUS_BUSY_UNAVAILABLE for s in slots)
    fresh = CloudModel()
    await fresh.sync(feed(his))
    assert cloud.state() == fresh.state()
    quiet = await cloud.sync(feed(his))
    assert (quiet.snapshot, len(quiet.changes)) == (False, 0)


async def test_remaining_places_change_the_slot_and_its_session(his: MemoryHis) -> None:
    cloud = CloudModel()
    await cloud.sync(feed(his))
    slot = next(c.slot for c in cloud.changes() if c.kind == SLOT and c.slot.remaining)
    m = his.slot_index(slot.slot_id)
    assert m is not None
    his.set_remaining(m, slot.remaining - 1)
    await cloud.sync(feed(his))
    changed = {c.entity_id: c for c in cloud.changes()}
    assert set(changed) == {slot.slot_id, slot.schedule_id}
    assert changed[slot.slot_id].slot.remaining == slot.remaining - 1
    assert changed[slot.slot_id].version > 0


def test_hospitals_are_seeded_unique_and_exported_as_toml() -> None:
    fleet = fleet_hospitals(450, seed=2, prefix="t-")
    again = fleet_hospitals(450, seed=2, prefix="t-")
    assert fleet == again
    assert len({h.hospital_id for h in fleet}) == len({h.name for h in fleet}) == 450
    assert fleet[0].hospital_id == "t-00001"
    document = tomllib.loads(hospitals_toml(fleet, seed=2))
    rows = document["hospital"]
    assert [r["id"] for r in rows] == [h.hospital_id for h in fleet]
    assert all(set(r) == {"id", "name", "region_code"} for r in rows)
    assert all(len(r["region_code"]) == 6 and r["region_code"].isdigit() for r in rows)
    with pytest.raises(ValueError, match="prefix"):
        fleet_hospitals(1, prefix="bad prefix ")


@pytest.fixture
async def control() -> AsyncIterator[tuple[Fleet, str]]:
    hospitals = fleet_hospitals(10)
    fleet = Fleet(
        FleetConfig(gateways=("localhost:1",), tls=False, shape=SHAPE),
        hospitals,
        {h.hospital_id: "token" for h in hospitals},
    )
    runner = web.AppRunner(control_app(fleet))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield fleet, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_the_control_api_applies_faults_to_a_selection(
    control: tuple[Fleet, str],
) -> None:
    fleet, url = control
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/faults", json={"fault": "slow", "fraction": 0.3, "latency": 2.5}
        ) as r:
            assert r.status == 200
            slow = (await r.json())["applied"]
        assert len(slow) == 3
        assert all(fleet.edges[h].faults.latency == 2.5 for h in slow)
        async with http.post(
            f"{url}/faults", json={"fault": "garbage", "hospitals": ["sim-00002"]}
        ) as r:
            assert r.status == 200
        async with http.get(f"{url}/hospitals", params={"id": "sim-00002"}) as r:
            assert (await r.json())["hospitals"][0]["faults"] == ["garbage"]
        async with http.get(f"{url}/status") as r:
            status = await r.json()
        assert status["faults"] == {"slow": 3, "garbage": 1}
        async with http.post(f"{url}/changes", json={"changes": 4, "count": 2}) as r:
            assert (await r.json())["applied"] == 8
        for body, code in (
            ({"fault": "melting", "all": True}, 400),
            ({"fault": "slow", "fraction": 2}, 400),
            ({"fault": "slow", "hospitals": ["nope"]}, 404),
            ({"fault": "slow", "all": True, "count": 3}, 400),
            ({"fault": "slow", "all": True, "latency": -1}, 400),
        ):
            async with http.post(f"{url}/faults", json=body) as r:
                assert r.status == code, body
                assert "error" in await r.json()
        async with http.post(f"{url}/faults", data=b"{not json") as r:
            assert r.status == 400
        async with http.delete(f"{url}/faults") as r:
            assert r.status == 200
        assert all(not e.faults.describe() for e in fleet.edges.values())
        async with http.post(f"{url}/rate", json={"changes_per_second": 2}) as r:
            assert r.status == 200
        assert fleet.change_rate == 2


def test_public_surface_is_pinned() -> None:
    import tools.fleet_sim
    import tools.fleet_sim.services

    assert tools.fleet_sim.__all__ == [
        "BROKEN_MARKER",
        "DEPARTMENTS",
        "FAULTS",
        "DirectoryShape",
        "EdgeFaults",
        "EdgeUplink",
        "Fleet",
        "FleetConfig",
        "FleetError",
        "FleetUpgrades",
        "MemoryHis",
        "SimEdge",
        "SimHospital",
        "SimSlots",
        "UpgradeService",
        "control_app",
        "fleet_hospitals",
        "hospitals_toml",
        "issue_credentials",
        "main",
        "read_credentials",
        "rss_kib",
        "write_hospitals_toml",
    ]
    assert tools.fleet_sim.services.__all__ == [
        "FEED_FAULTS",
        "SERVICES",
        "FleetDirectoryServicer",
        "FleetPatientServicer",
        "PatientBook",
    ]


@pytest.fixture
async def served_edge() -> AsyncIterator[tuple[Fleet, grpc.aio.Channel]]:
    """A simulated edge's services on a real grpc.aio server (no tunnel needed here)."""
    hospitals = fleet_hospitals(1)
    fleet = Fleet(
        FleetConfig(gateways=("localhost:1",), tls=False, shape=SHAPE),
        hospitals,
        {h.hospital_id: "token" for h in hospitals},
    )
    edge = next(iter(fleet.edges.values()))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    for register in SERVICES:
        register(server, edge)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fleet, channel
    finally:
        await server.stop(None)


async def test_feed_faults_corrupt_what_the_cloud_receives(
    served_edge: tuple[Fleet, grpc.aio.Channel],
) -> None:
    fleet, channel = served_edge
    edge = next(iter(fleet.edges.values()))
    stub = directory_pb2_grpc.DirectoryServiceStub(channel)
    request = directory_pb2.GetChangesRequest(page_size=5000)
    clean = await stub.GetChanges(request, timeout=10)
    assert all(len(c.content_digest) == 32 and c.version > 0 for c in clean.changes)
    by_id = {c.entity_id: c for c in clean.changes}
    await fleet.fault([edge], "renamed")
    renamed = await stub.GetChanges(request, timeout=10)
    assert len(renamed.changes) == len(clean.changes)
    assert not any(c.department.department_id for c in renamed.changes if c.HasField("department"))
    assert not any(c.slot.slot_id for c in renamed.changes if c.HasField("slot"))
    await fleet.fault([edge], "garbage")
    garbage = await stub.GetChanges(request, timeout=10)
    wrong = [c for c in garbage.changes if c.version == 0]
    assert len(wrong) == (len(garbage.changes) + 1) // 2
    assert all(len(c.content_digest) == 7 for c in wrong)
    assert all(
        (c.kind == directory_pb2.ENTITY_KIND_SLOT) != (c.WhichOneof("change") == "slot")
        for c in wrong
    )
    await fleet.fault([edge], "rewind")
    rewound = await stub.GetChanges(request, timeout=10)
    assert all(c.version < by_id[c.entity_id].version for c in rewound.changes)
    await fleet.clear([edge])
    assert (await stub.GetChanges(request, timeout=10)).changes[0].version > 0
    await fleet.fault([edge], "slow", latency=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListDepartments(directory_pb2.ListDepartmentsRequest(), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
