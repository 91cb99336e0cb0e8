"""The fleet simulator learns to upgrade: each light edge runs the real upgrade agent.

* `UpgradeService` — a stand-in ``EdgeService`` for simulations and tests: TLS, the
  hospital credential checked like the node checks it, and the cloud's real
  `cloud.upgrades.UpgradeHandlers` behind ``GetUpgradeManifest``, ``DownloadUpgrade`` and
  ``ReportHealth``. (The node's own EdgeService servicer serves the same handlers.)
* `EdgeUplink` — one edge's calls to it (the `UpgradeUplink` seam), with its credential.
* `SimSlots` — simulated A/B slots: "install" records the new version; the switch is a
  real restart of the edge's tunnel (calls to the hospital fail while it is down, as they
  would), then the health gate: tunnel up again and the package not marked broken
  (a payload file named ``BROKEN``) and the hospital not told to fail — else the edge
  restarts again into its old version (rollback) and reports it.
* `FleetUpgrades` — an agent per edge of a `Fleet`, checking every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any

import grpc

from cloud.errors import CLOUD_ERRORS
from cloud.fleet import CredentialStore
from cloud.upgrades import UpgradeHandlers
from frontend_server.updater import (
    Outcome,
    RunningVersion,
    SwitchAttempt,
    UpdaterConfig,
    UpgradeAgent,
)
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from mesh import errors
from mesh.packages import TrustRoot, VerifiedPackage
from mesh.retry import RetryPolicy
from mesh.tunnel import bearer_token
from tools.fleet_sim._edge import SimEdge

__all__ = ["BROKEN_MARKER", "EdgeUplink", "FleetUpgrades", "SimSlots", "UpgradeService"]

log = logging.getLogger("tools.fleet_sim.upgrades")

BROKEN_MARKER = "BROKEN"
"""A payload file of this name makes the simulated new version fail its health gate."""


@CLOUD_ERRORS.servicer
class _Servicer(edge_pb2_grpc.EdgeServiceServicer):
    def __init__(self, handlers: UpgradeHandlers, credentials: CredentialStore) -> None:
        self.handlers = handlers
        self._credentials = credentials
        self.reports = 0

    async def _hospital(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        found = await self._credentials.authenticate(
            bearer_token(list(context.invocation_metadata() or ()))
        )
        if found is None:
            raise errors.Unauthenticated("missing or bad hospital credential")
        return found.hospital_id

    async def ReportTaskResults(
        self, request: edge_pb2.ReportTaskResultsRequest, context: Any
    ) -> edge_pb2.ReportTaskResultsResponse:
        raise errors.Unimplemented("the upgrade stand-in serves upgrades and health only")

    async def GetUpgradeManifest(
        self, request: edge_pb2.GetUpgradeManifestRequest, context: Any
    ) -> edge_pb2.GetUpgradeManifestResponse:
        return await self.handlers.get_upgrade_manifest(request, await self._hospital(context))

    async def DownloadUpgrade(
        self, request: edge_pb2.DownloadUpgradeRequest, context: Any
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        hospital = await self._hospital(context)
        async for chunk in self.handlers.download_upgrade(request, hospital):
            yield chunk

    async def ReportHealth(
        self, request: edge_pb2.ReportHealthRequest, context: Any
    ) -> edge_pb2.ReportHealthResponse:
        hospital = await self._hospital(context)
        self.reports += 1
        available = await self.handlers.record_health(request, hospital)
        response = edge_pb2.ReportHealthResponse(upgrade_available=available)
        response.server_time.GetCurrentTime()
        response.next_report_interval.FromSeconds(30)
        return response


class UpgradeService:
    """A stand-in EdgeService serving the upgrade handlers over TLS (see the module doc).

    Args:
        handlers: the cloud's upgrade handlers.
        credentials: the fleet's credential store.
        server_credentials: TLS of the server.
    """

    def __init__(
        self,
        handlers: UpgradeHandlers,
        credentials: CredentialStore,
        server_credentials: grpc.ServerCredentials,
    ) -> None:
        self.servicer = _Servicer(handlers, credentials)
        self._creds = server_credentials
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> int:
        """Listen on a free port; returns it."""
        self._server = grpc.aio.server()
        edge_pb2_grpc.add_EdgeServiceServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_secure_port(f"{host}:0", self._creds)
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.stop(0.5)


class EdgeUplink:
    """One edge's upgrade calls to an EdgeService (the `UpgradeUplink` seam).

    Args:
        channel: a TLS channel to the service.
        credential: the hospital's bearer token.
        edge_id: the edge's id.
        slots: where the running version comes from (for reports).
        contract_release: the contract release the edge reports.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        credential: str,
        edge_id: str,
        slots: SimSlots,
        *,
        contract_release: str = "1.2.0",
        timeout: float = 30.0,
    ) -> None:
        self._stub = errors.wrap(edge_pb2_grpc.EdgeServiceStub(channel))
        self._meta = (("authorization", f"Bearer {credential}"),)
        self._edge_id = edge_id
        self._slots = slots
        self._contract = contract_release
        self._timeout = timeout
        self.bytes_received = 0

    async def get_upgrade_manifest(
        self, request: edge_pb2.GetUpgradeManifestRequest
    ) -> edge_pb2.GetUpgradeManifestResponse:
        return await self._stub.GetUpgradeManifest(
            request, metadata=self._meta, timeout=self._timeout
        )

    async def download_upgrade(
        self, request: edge_pb2.DownloadUpgradeRequest
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        async for chunk in self._stub.DownloadUpgrade(request, metadata=self._meta):
            self.bytes_received += len(chunk.data)
            yield chunk

    async def report_upgrade(self, upgrade: edge_pb2.UpgradeHealth) -> None:
        running = self._slots.running()
        request = edge_pb2.ReportHealthRequest(
            request_id=f"{self._edge_id}-{random.getrandbits(64):016x}",
            edge_id=self._edge_id,
            state=edge_pb2.EDGE_HEALTH_STATE_HEALTHY,
            software_version=running.version,
            contract_release=self._contract,
            upgrade=upgrade,
        )
        request.report_time.GetCurrentTime()
        await self._stub.ReportHealth(request, metadata=self._meta, timeout=self._timeout)


class SimSlots:
    """Simulated A/B slots of one simulated edge (see the module docstring).

    Args:
        edge: the simulated edge whose tunnel restarts on a switch.
        version: the version it runs at first.
        package: the full package it was installed from (a delta's base), if any.
        fails_gate: the new version fails its health gate here whatever the package.
        gate_timeout: cap on the simulated gate (seconds to get the tunnel back).
    """

    def __init__(
        self,
        edge: SimEdge | None,
        version: str,
        package: Path | None,
        *,
        fails_gate: bool = False,
    ) -> None:
        self.edge = edge
        self.active = RunningVersion(version, package)
        self.idle: tuple[Path, VerifiedPackage] | None = None
        self.fails_gate = fails_gate
        self.attempt: SwitchAttempt | None = None
        self.switched = asyncio.Event()
        self.on_switched: list[Any] = []
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def running(self) -> RunningVersion:
        return self.active

    def install(self, package_path: Path, verified: VerifiedPackage) -> None:
        keep = package_path.with_name(f"slot-{verified.manifest.version}.pkg")
        package_path.replace(keep)
        self.idle = (keep, verified)

    def request_switch(self, health_gate_timeout: float) -> None:
        self.switched.clear()
        self._task = asyncio.get_running_loop().create_task(self._switch(health_gate_timeout))

    def last_attempt(self) -> SwitchAttempt | None:
        return self.attempt

    async def _restart(self, gate: float) -> bool:
        if self.edge is None:
            return True
        self.restarts += 1
        await self.edge.offline(grace=1.0)
        await self.edge.online()
        try:
            async with asyncio.timeout(gate):
                await self.edge.wait_connected()
        except TimeoutError:
            return False
        return True

    async def _switch(self, gate: float) -> None:
        assert self.idle is not None
        path, verified = self.idle
        version = verified.manifest.version
        from mesh.packages import package_id

        pid = package_id(version, verified.sha256)
        broken = any(f.path == BROKEN_MARKER for f in verified.manifest.files)
        up = await self._restart(gate)
        if up and not broken and not self.fails_gate:
            old = self.active.version
            self.active = RunningVersion(version, path, standby_version=old)
            self.attempt = SwitchAttempt(dt.datetime.now(dt.UTC), version, True, package_id=pid)
        else:
            why = (
                "the tunnel did not come back within the gate"
                if not up
                else "the new version's probes failed within the health gate"
            )
            await self._restart(gate)  # back into the old slot
            self.active = dataclasses.replace(self.active, standby_version=version)
            self.attempt = SwitchAttempt(
                dt.datetime.now(dt.UTC), version, False, "HEALTH_GATE_FAILED", why, package_id=pid
            )
        self.idle = None
        try:
            for callback in self.on_switched:
                await callback()
        finally:
            self.switched.set()


@dataclasses.dataclass
class _Member:
    slots: SimSlots
    uplink: EdgeUplink
    agent: UpgradeAgent
    outcomes: list[Outcome]


class FleetUpgrades:
    """The real upgrade agent on every simulated edge (see the module docstring).

    Args:
        edges: the simulated edges (``None`` values: agents without a tunnel, for benches).
        channel: a TLS channel to the EdgeService.
        credentials: hospital id → bearer token.
        trust: the root keys the edges trust.
        data_dir: each edge gets ``<data_dir>/<hospital>`` for its downloads.
        version: the version every edge runs at first.
        package: its full package (the delta base).
        fail_gate: hospitals whose health gate fails whatever they install.
        interval: seconds between an agent's checks.
    """

    def __init__(
        self,
        edges: Mapping[str, SimEdge | None],
        channel: grpc.aio.Channel,
        credentials: Mapping[str, str],
        *,
        trust: TrustRoot,
        data_dir: Path,
        version: str,
        package: Path | None,
        fail_gate: Collection[str] = (),
        interval: float = 0.2,
        max_bytes_per_second: int = 0,
    ) -> None:
        self.interval = interval
        self.members: dict[str, _Member] = {}
        for hospital, edge in edges.items():
            edge_id = edge.edge_id if edge is not None else f"fleet-{hospital}"
            slots = SimSlots(edge, version, package, fails_gate=hospital in fail_gate)
            uplink = EdgeUplink(channel, credentials[hospital], edge_id, slots)
            agent = UpgradeAgent(
                UpdaterConfig(
                    edge_id=edge_id,
                    data_dir=data_dir / hospital,
                    trust=trust,
                    max_bytes_per_second=max_bytes_per_second,
                    retry=RetryPolicy(initial=0.05, maximum=1.0, deadline=None, attempts=5),
                ),
                uplink,
                slots,
            )
            slots.on_switched.append(agent.report_switch)
            self.members[hospital] = _Member(slots, uplink, agent, [])
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, member: _Member) -> None:
        rng = random.Random(id(member))
        while not self._stop.is_set():
            if member.slots._task is None or member.slots.switched.is_set():
                with contextlib.suppress(errors.StatusError):
                    result = await member.agent.check_once()
                    member.outcomes.append(result.outcome)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval * (0.5 + rng.random())):
                    await self._stop.wait()

    def start(self) -> None:
        """Start every agent's checks."""
        self._tasks = [asyncio.create_task(self._loop(m)) for m in self.members.values()]

    async def stop(self) -> None:
        """Stop checking; waits for switches in progress."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for m in self.members.values():
            if m.slots._task is not None:
                await m.slots._task

    def versions(self) -> dict[str, str]:
        """Hospital → the version it runs."""
        return {h: m.slots.active.version for h, m in self.members.items()}

    def bytes_received(self) -> dict[str, int]:
        """Hospital → package bytes it downloaded."""
        return {h: m.uplink.bytes_received for h, m in self.members.items()}
