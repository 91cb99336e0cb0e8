"""The dialer after go-aways: it backs off, and waits what the node asks within a cap."""

from __future__ import annotations

import itertools
import random

from frontend_server.dialer import Backoff, Dialer, DialerConfig
from mesh.retry import RetryPolicy
from mesh.tunnel import TunnelConfig, TunnelServer
from tests.support.waiting import until
from tools.hostile import ATTACKS, HostileGateway, Options, Peer, run_attack


async def draining_gateway(reconnect_after: float) -> tuple[HostileGateway, int]:
    """A gateway that welcomes every edge and sends go-away at once."""
    options = Options(reconnect_after=reconnect_after, close_within=1.0)

    async def drain(peer: Peer) -> None:
        await run_attack(peer, ATTACKS["drain-storm"], options)

    gateway = HostileGateway(drain)
    return gateway, await gateway.start()


def config(port: int, **overrides: object) -> DialerConfig:
    values: dict[str, object] = {
        "gateways": (f"127.0.0.1:{port}",),
        "hospital_id": "h-1",
        "edge_id": "e-1",
        "credential": "token",
        "tls": False,
        "backoff_initial": 0.1,
        "backoff_max": 0.8,
        "stable_after": 60.0,
        "tunnel": TunnelConfig(handshake_timeout=2.0),
    }
    values.update(overrides)
    return DialerConfig(**values)  # type: ignore[arg-type]


async def test_a_gateway_that_drains_at_once_gets_a_backoff_not_a_storm() -> None:
    # The same seed gives the delays the dialer will draw: every drained tunnel was up
    # only briefly, so each counts as a failure and the window doubles.
    seed = 20261206
    reference = Backoff(
        RetryPolicy(initial=0.1, maximum=0.8, deadline=None),
        stable_after=60.0,
        rng=random.Random(seed),
    )
    delays = [reference.next_delay(0.0) for _ in range(5)]
    gateway, port = await draining_gateway(0.0)
    try:
        async with Dialer(config(port), TunnelServer(), rng=random.Random(seed)):
            await until(lambda: gateway.connections >= 6, limit=20)
    finally:
        await gateway.stop()
    gaps = [b - a for a, b in itertools.pairwise(gateway.connected_at)]
    # Each redial waited at least its backoff delay (before the fix: no wait at all).
    assert all(gap >= 0.9 * delay for gap, delay in zip(gaps, delays, strict=False)), (
        gaps,
        delays,
    )


async def test_reconnect_after_is_waited_but_capped() -> None:
    gateway, port = await draining_gateway(3600.0)  # a node (or a hostile one) asks an hour
    try:
        cfg = config(port, reconnect_after_max=0.5)
        async with Dialer(cfg, TunnelServer()):
            await until(lambda: gateway.connections >= 3, limit=20)  # not an hour
    finally:
        await gateway.stop()
    gaps = [b - a for a, b in itertools.pairwise(gateway.connected_at)]
    assert all(gap >= 0.45 for gap in gaps), gaps  # the capped hint was honoured
