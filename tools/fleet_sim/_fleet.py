"""The fleet: N simulated edges in one process, a change rate, faults on command.

Edges dial in waves (as real edges reconnect with jitter, not all at once). One task applies
the change rate to the whole fleet: every tick, ``rate * hospitals * tick`` random changes
to random hospitals, so thousands of hospitals cost one task, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from frontend_server.dialer import DialerConfig
from mesh.tunnel import TunnelConfig
from tools.fleet_sim._edge import SimEdge
from tools.fleet_sim._his import ZONE, DirectoryShape, MemoryHis
from tools.fleet_sim._hospitals import SimHospital
from tools.fleet_sim.services import FEED_FAULTS

__all__ = ["FAULTS", "Fleet", "FleetConfig", "FleetError", "rss_kib"]

FAULTS = ("offline", "slow", *FEED_FAULTS)
"""Faults the fleet can put on an edge."""
_TICK = 0.1


class FleetError(Exception):
    """A command the fleet cannot carry out (unknown hospital, bad selection, bad fault)."""


def rss_kib() -> int:
    """This process's resident set size, in KiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """What the fleet simulates and where it dials."""

    gateways: tuple[str, ...]
    """``HOST:PORT`` of the cloud's gateway nodes."""
    ca_cert: bytes | None = None
    """PEM of the CA to trust; None: the system roots."""
    tls: bool = True
    """Dial with TLS."""
    shape: DirectoryShape = dataclasses.field(default_factory=DirectoryShape)
    """Every hospital's directory size."""
    change_rate: float = 0.05
    """Directory changes per hospital per second (fleet-wide average)."""
    seed: int = 1
    """Seed of the changes (the hospitals' data follow their own seeds)."""
    wave: int = 100
    """Edges that start dialing together."""
    wave_timeout: float = 30.0
    """How long a wave may take to connect before the next one starts anyway."""
    backoff_initial: float = 1.0
    """The dialers' first backoff window, seconds."""
    backoff_max: float = 30.0
    """The dialers' largest backoff window, seconds."""
    tunnel: TunnelConfig = dataclasses.field(default_factory=TunnelConfig)
    """Tunnel limits and timers."""

    def __post_init__(self) -> None:
        if not self.gateways:
            raise ValueError("at least one gateway (--cloud HOST:PORT) is required")
        if self.change_rate < 0:
            raise ValueError("change_rate must be >= 0")
        if self.wave < 1:
            raise ValueError("wave must be >= 1")


class Fleet:
    """N simulated edges (see the module docstring).

    Args:
        config: what to simulate and where to dial.
        hospitals: the hospitals.
        credentials: hospital id -> bearer token (every hospital needs one).
    """

    def __init__(
        self,
        config: FleetConfig,
        hospitals: Sequence[SimHospital],
        credentials: Mapping[str, str],
    ) -> None:
        missing = [h.hospital_id for h in hospitals if h.hospital_id not in credentials]
        if missing:
            raise FleetError(f"no credential for {len(missing)} hospital(s), e.g. {missing[0]}")
        self.config = config
        self.baseline_rss_kib = rss_kib()
        first_day = dt.datetime.now(ZONE).date()
        self.edges: dict[str, SimEdge] = {}
        for h in hospitals:
            dialer = DialerConfig(
                gateways=config.gateways,
                hospital_id=h.hospital_id,
                edge_id=f"fleet-{h.hospital_id}",
                credential=credentials[h.hospital_id],
                tls=config.tls,
                ca_cert=config.ca_cert,
                backoff_initial=config.backoff_initial,
                backoff_max=config.backoff_max,
                tunnel=config.tunnel,
            )
            his = MemoryHis(h.seed, config.shape, first_day=first_day)
            self.edges[h.hospital_id] = SimEdge(h, his, dialer)
        self.change_rate = config.change_rate
        self._rng = random.Random(config.seed)
        self._order = list(self.edges)
        random.Random(config.seed).shuffle(self._order)
        self._stop = asyncio.Event()
        self.started = 0.0
        self.connect_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Dials every edge, wave by wave; returns how many connected."""
        started = time.monotonic()
        edges = list(self.edges.values())
        for i in range(0, len(edges), self.config.wave):
            wave = edges[i : i + self.config.wave]
            for edge in wave:
                await edge.online()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.wave_timeout):
                    await asyncio.gather(*(e.wait_connected() for e in wave))
        self.connect_seconds = time.monotonic() - started
        self.started = time.time()
        return self.connected()

    async def run(self) -> None:
        """Applies the change rate until :meth:`shutdown`."""
        carry = 0.0
        edges = list(self.edges.values())
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK):
                    await self._stop.wait()
            carry += self.change_rate * len(edges) * _TICK
            count, carry = int(carry), carry - int(carry)
            for _ in range(count):
                self._rng.choice(edges).his.change(self._rng)

    async def shutdown(self, grace: float = 1.0) -> None:
        """Stops the changes and drains every tunnel."""
        self._stop.set()
        await asyncio.gather(*(e.offline(grace) for e in self.edges.values()))

    # -- commands ----------------------------------------------------------------------

    def connected(self) -> int:
        """How many edges have their tunnel up."""
        return sum(e.connected for e in self.edges.values())

    def select(
        self,
        *,
        hospitals: Sequence[str] = (),
        fraction: float | None = None,
        count: int | None = None,
        everyone: bool = False,
    ) -> list[SimEdge]:
        """The edges a command applies to.

        Args:
            hospitals: these hospital ids.
            fraction: this fraction of the fleet (the same seeded order every time, so
                0.1 then 0.2 grows the same set).
            count: this many edges (same order).
            everyone: the whole fleet.

        Returns:
            The edges.

        Raises:
            FleetError: an unknown hospital, a bad fraction or count, or no selection.
        """
        chosen = [everyone, bool(hospitals), fraction is not None, count is not None]
        if sum(chosen) != 1:
            raise FleetError("select with exactly one of: hospitals, fraction, count, all")
        if everyone:
            return list(self.edges.values())
        if hospitals:
            unknown = [h for h in hospitals if h not in self.edges]
            if unknown:
                raise FleetError(f"unknown hospital {unknown[0]!r}")
            return [self.edges[h] for h in dict.fromkeys(hospitals)]
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise FleetError("fraction must be in (0, 1]")
            count = math.ceil(fraction * len(self._order))
        assert count is not None
        if not 1 <= count <= len(self._order):
            raise FleetError(f"count must be in [1, {len(self._order)}]")
        return [self.edges[h] for h in self._order[:count]]

    async def fault(self, edges: Sequence[SimEdge], fault: str, *, latency: float = 1.0) -> None:
        """Puts ``fault`` on ``edges`` (see :data:`FAULTS`).

        Raises:
            FleetError: an unknown fault or a bad latency.
        """
        if fault not in FAULTS:
            raise FleetError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        if fault == "slow" and not 0 < latency <= 600:
            raise FleetError("latency must be in (0, 600] seconds")
        for edge in edges:
            if fault == "offline":
                edge.faults.offline = True
            elif fault == "slow":
                edge.faults.latency = latency
            else:
                edge.faults.feed = fault
        if fault == "offline":
            await asyncio.gather(*(e.offline() for e in edges))

    async def clear(self, edges: Sequence[SimEdge]) -> None:
        """Ends every fault on ``edges``; offline ones dial again."""
        back = [e for e in edges if e.faults.offline]
        for edge in edges:
            edge.faults.offline = False
            edge.faults.latency = 0.0
            edge.faults.feed = ""
        for edge in back:
            await edge.online()

    def burst(self, edges: Sequence[SimEdge], changes: int) -> int:
        """Applies ``changes`` random changes to each of ``edges`` at once.

        Raises:
            FleetError: a count outside [1, 100000].
        """
        if not 1 <= changes <= 100_000:
            raise FleetError("changes must be in [1, 100000]")
        for edge in edges:
            for _ in range(changes):
                edge.his.change(self._rng)
        return changes * len(edges)

    def status(self) -> dict[str, Any]:
        """Counts, faults and memory, for the control API and the ready line."""
        faults: dict[str, int] = {}
        for edge in self.edges.values():
            for name in edge.faults.describe():
                key = name.split()[0]
                faults[key] = faults.get(key, 0) + 1
        rss = rss_kib()
        count = len(self.edges)
        return {
            "hospitals": count,
            "connected": self.connected(),
            "faults": faults,
            "change_rate": self.change_rate,
            "changes_applied": sum(e.his.changes_applied for e in self.edges.values()),
            "connect_seconds": round(self.connect_seconds, 2),
            "rss_kib": rss,
            "baseline_rss_kib": self.baseline_rss_kib,
            "kib_per_edge": round((rss - self.baseline_rss_kib) / count, 1) if rss else None,
        }

    def describe(self, edge: SimEdge) -> dict[str, Any]:
        """One edge, for the control API."""
        return {
            "id": edge.hospital.hospital_id,
            "name": edge.hospital.name,
            "region_code": edge.hospital.region_code,
            "connected": edge.connected,
            "faults": edge.faults.describe(),
            "changes_applied": edge.his.changes_applied,
        }
