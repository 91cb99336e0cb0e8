"""One simulated edge: a hospital's services on a tunnel registrar, and the dialer that holds it.

The dialer is the real edge's (``frontend_server.dialer``): its own TLS connection, real
``EdgeTunnel`` with the hospital's credential, reconnection with backoff and full jitter.
Faults are per edge: ``offline`` drops the tunnel and keeps it down, ``slow`` delays every
call, a feed fault corrupts ``GetChanges`` (see :mod:`tools.fleet_sim.services`).
"""

from __future__ import annotations

import asyncio
import contextlib

from frontend_server.dialer import Dialer, DialerConfig
from mesh.tunnel import TunnelServer
from tools.fleet_sim._his import MemoryHis
from tools.fleet_sim._hospitals import SimHospital
from tools.fleet_sim.services import SERVICES, PatientBook

__all__ = ["EdgeFaults", "SimEdge"]


class EdgeFaults:
    """The faults in force on one simulated edge."""

    __slots__ = ("feed", "latency", "offline")

    def __init__(self) -> None:
        self.latency = 0.0
        """Seconds added to every call (``slow``)."""
        self.feed = ""
        """The feed fault (``renamed``, ``garbage``, ``rewind``), or ""."""
        self.offline = False
        """The tunnel is down on purpose and stays down."""

    async def delay(self) -> None:
        """Waits the ``slow`` latency (the simulated HIS is slow to answer)."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def describe(self) -> list[str]:
        """The faults in force, as names."""
        out = []
        if self.offline:
            out.append("offline")
        if self.latency > 0:
            out.append(f"slow {self.latency:g}s")
        if self.feed:
            out.append(self.feed)
        return out


class SimEdge:
    """One simulated hospital's edge.

    Args:
        hospital: who it is.
        his: its in-memory directory.
        dialer: where and how it dials (with its credential).
    """

    __slots__ = ("_dialer", "_patients", "dialer_config", "faults", "his", "hospital", "server")

    def __init__(self, hospital: SimHospital, his: MemoryHis, dialer: DialerConfig) -> None:
        self.hospital = hospital
        self.his = his
        self.dialer_config = dialer
        self.faults = EdgeFaults()
        self.server = TunnelServer()
        self._patients: PatientBook | None = None
        self._dialer: Dialer | None = None
        for register in SERVICES:
            register(self.server, self)

    @property
    def edge_id(self) -> str:
        """The edge's id in its hello."""
        return self.dialer_config.edge_id

    @property
    def connected(self) -> bool:
        """Whether its tunnel is up."""
        return self._dialer is not None and self._dialer.connected.is_set()

    def patients(self) -> PatientBook:
        """The hospital's patients (created when first needed)."""
        if self._patients is None:
            self._patients = PatientBook()
        return self._patients

    async def online(self) -> None:
        """Starts dialing (no-op when already dialing)."""
        if self._dialer is None:
            self._dialer = Dialer(self.dialer_config, self.server)
            await self._dialer.__aenter__()

    async def wait_connected(self) -> None:
        """Waits until the tunnel is up."""
        assert self._dialer is not None
        await self._dialer.connected.wait()

    async def offline(self, grace: float = 0.0) -> None:
        """Drops the tunnel (in-flight calls get ``grace`` seconds) and stops dialing."""
        dialer, self._dialer = self._dialer, None
        if dialer is not None:
            with contextlib.suppress(Exception):
                await dialer.shutdown(grace)
