"""The fleet simulator as it is run: a node process, a fleet process of 50 edges, TLS.

The cloud side calls the simulated hospitals the way ``hplus cloud call`` does (the node's
internal endpoint, routed by hospital id), reads their feeds, and watches faults commanded
through the fleet's control API.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from hplus.hospital.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
    patient_pb2,
    patient_pb2_grpc,
)
from tests.integration.hospital_env import error_reason, field_violations
from tests.support.feed import CloudModel, Fetch
from tests.support.waiting import until
from tools.his_sim import id_card_check_digit

REPO = Path(__file__).resolve().parents[2]
FLEET = 50
T = 10.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return env


class Output:
    """A child's output, read continuously (a full pipe would stall the child)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._cursor = 0
        self._changed = asyncio.Condition()
        self._ended = False
        self.task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def expect(self, pattern: str, limit: float = 120.0) -> re.Match[str]:
        """The first line after the last match that matches ``pattern``."""
        async with asyncio.timeout(limit), self._changed:
            while True:
                while self._cursor < len(self.lines):
                    line = self.lines[self._cursor]
                    self._cursor += 1
                    found = re.search(pattern, line)
                    if found:
                        return found
                if self._ended:
                    raise AssertionError(f"ended before {pattern!r}: {self.lines[-20:]}")
                await self._changed.wait()


@asynccontextmanager
async def _process(*argv: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Output]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = Output(proc.stdout)
    try:
        yield proc, output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await output.task


@dataclass
class Cloud:
    channel: grpc.aio.Channel
    secret: str

    def meta(self, hospital: str) -> tuple[tuple[str, str], ...]:
        return ((ROUTE_KEY, hospital), (INTERNAL_AUTH_KEY, self.secret))

    def directory(self) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel)

    def feed(self, hospital: str) -> Fetch:
        async def fetch(request: directory_pb2.GetChangesRequest) -> Any:
            return await self.directory().GetChanges(
                request, metadata=self.meta(hospital), timeout=T
            )

        return fetch

    async def connected(self) -> set[str]:
        stub = operations_pb2_grpc.OperationsServiceStub(self.channel)
        reply = await stub.ListConnectedHospitals(
            operations_pb2.ListConnectedHospitalsRequest(page_size=500),
            metadata=((INTERNAL_AUTH_KEY, self.secret),),
            timeout=T,
        )
        return {c.hospital_id for c in reply.connections}


def _id_card(first17: str) -> str:
    return first17 + id_card_check_digit(first17)


async def test_a_fleet_of_50_edges_serves_feeds_patients_and_faults(tmp_path: Path) -> None:
    async with _process(
        "-m", "tools.cli", "cloud", "run", "--data-dir", str(tmp_path),
        "--listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0",
    ) as (node, node_out):  # fmt: skip
        port = (await node_out.expect(r"listening on 127\.0\.0\.1:(\d+) \(TLS"))[1]
        internal = (await node_out.expect(r"internal endpoint: (\S+)"))[1]
        toml = tmp_path / "hospitals.toml"
        async with _process(
            "-m", "tools.fleet_sim", "--hospitals", str(FLEET),
            "--cloud", f"localhost:{port}", "--node-data-dir", str(tmp_path),
            "--credentials-dir", str(tmp_path / "credentials"),
            "--hospitals-toml", str(toml), "--change-rate", "0", "--seed", "4",
        ) as (fleet, fleet_out):  # fmt: skip
            control = (await fleet_out.expect(r"control API at (\S+)"))[1]
            ready = await fleet_out.expect(r"ready: (\d+) of (\d+) edges connected")
            assert ready[1] == ready[2] == str(FLEET)
            rows = tomllib.loads(toml.read_text(encoding="utf-8"))["hospital"]
            ids = [r["id"] for r in rows]
            assert len(ids) == FLEET
            assert len(list((tmp_path / "credentials").glob("*.credential"))) == FLEET
            creds = grpc.ssl_channel_credentials((tmp_path / "tls" / "ca.pem").read_bytes())
            secret = (tmp_path / "cluster-secret").read_text().strip()
            async with (
                grpc.aio.secure_channel(internal, creds) as channel,
                aiohttp.ClientSession(base_url=control) as http,
            ):
                cloud = Cloud(channel, secret)
                assert await cloud.connected() == set(ids)
                await _every_edge_answers(cloud, ids)
                await _feeds_are_correct(cloud, http, ids[:3])
                await _patients(cloud, ids[5])
                await _faults_are_seen_from_the_cloud(cloud, http, ids)
            fleet.send_signal(signal.SIGTERM)
            await fleet_out.expect(r"fleet_sim: stopped")
            assert await asyncio.wait_for(fleet.wait(), 30) == 0
        node.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(node.wait(), 30) == 0
    for line in fleet_out.lines + node_out.lines:
        assert "Traceback" not in line, line


async def _every_edge_answers(cloud: Cloud, ids: list[str]) -> None:
    stub = admin_pb2_grpc.EdgeAdminServiceStub(cloud.channel)
    infos = await asyncio.gather(
        *(stub.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), metadata=cloud.meta(h), timeout=T)
          for h in ids)
    )  # fmt: skip
    assert [i.hospital_id for i in infos] == ids
    assert all("hplus.hospital.v1.DirectoryService" in i.services for i in infos)
    assert all("hplus.hospital.v1.PatientService" in i.services for i in infos)


async def _feeds_are_correct(cloud: Cloud, http: aiohttp.ClientSession, ids: list[str]) -> None:
    for hospital in ids:
        model = CloudModel()
        first = await model.sync(cloud.feed(hospital), page_size=300)
        assert first.snapshot
        assert len(model.pages) > 1
        digest = await cloud.directory().GetDirectoryDigest(
            directory_pb2.GetDirectoryDigestRequest(), metadata=cloud.meta(hospital), timeout=T
        )
        assert sum(k.count for k in digest.kinds) == len(model.held)
        slots = await cloud.directory().ListSlots(
            directory_pb2.ListSlotsRequest(
                schedule_id=next(
                    c.entity_id for c in model.changes()
                    if c.kind == directory_pb2.ENTITY_KIND_SCHEDULE
                )
            ),
            metadata=cloud.meta(hospital),
            timeout=T,
        )  # fmt: skip
        assert slots.slots
        async with http.post("/changes", json={"changes": 15, "hospitals": [hospital]}) as r:
            assert r.status == 200
        incremental = await model.sync(cloud.feed(hospital))
        assert not incremental.snapshot
        assert incremental.changes
        fresh = CloudModel()
        await fresh.sync(cloud.feed(hospital))
        assert model.state() == fresh.state()


async def _patients(cloud: Cloud, hospital: str) -> None:
    stub = patient_pb2_grpc.PatientServiceStub(cloud.channel)
    good = _id_card("11010519850301123")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")

    def register(number: str, key: str, name: str = "张三") -> Any:
        return stub.RegisterPatient(
            patient_pb2.RegisterPatientRequest(
                idempotency_key=key,
                name=name,
                id_card_type=common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                id_card_number=number,
            ),
            metadata=cloud.meta(hospital),
            timeout=T,
        )

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await register(bad, "k0")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value) == ["id_card_number"]
    created = await register(good, "k1")
    assert created.created
    again = await register(good, "k2")
    assert (again.created, again.patient.patient_id) == (False, created.patient.patient_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await register(good, "k3", name="李四")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(info.value) == "IDENTITY_MISMATCH"
    found = await stub.FindPatient(
        patient_pb2.FindPatientRequest(id_card_number=good),
        metadata=cloud.meta(hospital),
        timeout=T,
    )
    assert [p.patient_id for p in found.patients] == [created.patient.patient_id]


async def _faults_are_seen_from_the_cloud(
    cloud: Cloud, http: aiohttp.ClientSession, ids: list[str]
) -> None:
    down, slow, garbage = ids[10], ids[11], ids[12]
    for body in (
        {"fault": "offline", "hospitals": [down]},
        {"fault": "slow", "hospitals": [slow], "latency": 3},
        {"fault": "garbage", "hospitals": [garbage]},
    ):
        async with http.post("/faults", json=body) as r:
            assert r.status == 200

    async def gone() -> bool:
        return down not in await cloud.connected()

    await until(gone, 20)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cloud.directory().ListDepartments(
            directory_pb2.ListDepartmentsRequest(), metadata=cloud.meta(down), timeout=T
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cloud.directory().ListDepartments(
            directory_pb2.ListDepartmentsRequest(), metadata=cloud.meta(slow), timeout=0.5
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    page = await cloud.feed(garbage)(directory_pb2.GetChangesRequest(page_size=50))
    bad = [c for c in page.changes if len(c.content_digest) != 32 or c.version == 0]
    assert len(bad) == 25
    async with http.get("/status") as r:
        status = await r.json()
    assert status["faults"] == {"offline": 1, "slow": 1, "garbage": 1}
    assert status["connected"] == FLEET - 1

    async with http.delete("/faults") as r:
        assert r.status == 200

    async def back() -> bool:
        return down in await cloud.connected()

    await until(back, 30)
    fast = await cloud.directory().ListDepartments(
        directory_pb2.ListDepartmentsRequest(), metadata=cloud.meta(slow), timeout=2
    )
    assert fast.departments
    clean = await cloud.feed(garbage)(directory_pb2.GetChangesRequest(page_size=50))
    assert all(len(c.content_digest) == 32 and c.version for c in clean.changes)
