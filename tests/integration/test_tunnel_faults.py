"""Faults between the cloud and an edge, and between nodes and Redis, on real sockets.

The network is faked by one seam, `tools.proxy.Proxy`, a TCP proxy in front of a
real server that can black-hole or cut traffic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from cloud.config import NodeConfig
from cloud.gateway import HospitalUnavailable
from cloud.node import CloudNode
from frontend_server.dialer import Dialer, DialerConfig
from mesh.tunnel import TunnelConfig, TunnelServer
from tests.support.waiting import until
from tools.proxy import Proxy

PING = 0.3
FAST = TunnelConfig(ping_interval=PING, handshake_timeout=5.0, drain_grace=1.0)
LIVENESS_BOUND = 3 * PING
# Margin for timing asserts on a loaded machine. Still far below what else could end a
# call (TCP keepalive takes minutes, the calls' own deadlines are 30 s and more).
SLACK = 4.0


HANGS: dict[str, asyncio.Event] = {}
"""Per-test record of Hang calls: set when the edge servicer sees its call end."""


def edge_server() -> TunnelServer:
    """An edge serving /test.Edge/Echo (immediate), /test.Edge/Hang (never answers) and
    /test.Edge/Count (streams N one-byte replies, N = first request byte)."""
    server = TunnelServer()

    async def count(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]):
        await context.send_initial_metadata((("x-edge", "counted"),))
        for i in range(request[0]):
            yield bytes([i])
        context.set_trailing_metadata((("x-total-bin", bytes([request[0]])),))

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def hang(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        ended = HANGS.setdefault(request.decode(), asyncio.Event())
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()  # cancelled: the caller gave up or its deadline passed
        raise AssertionError("unreachable")

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Edge",
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo),
                    "Hang": grpc.unary_unary_rpc_method_handler(hang),
                    "Count": grpc.unary_stream_rpc_method_handler(count),
                },
            )
        ]
    )
    return server


def config(data_dir: Path, node_id: str, **kw: object) -> NodeConfig:
    return NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=data_dir,
        node_id=node_id,
        grace_seconds=1.0,
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def dialer(node: CloudNode, hospital: str, port: int) -> AsyncIterator[Dialer]:
    assert node.credentials is not None
    assert node.tls is not None
    token = (await node.credentials.issue(hospital)).token
    cfg = DialerConfig(
        gateways=(f"localhost:{port}",),
        hospital_id=hospital,
        edge_id=f"e-{hospital}",
        credential=token,
        ca_cert=node.tls.ca_cert.read_bytes(),
        backoff_initial=0.05,
        backoff_max=0.2,
        keepalive_time=1.0,
        keepalive_timeout=1.0,
        tunnel=FAST,
    )
    async with Dialer(cfg, edge_server()) as d:
        yield d


async def call(node: CloudNode, hospital: str, method: str, timeout: float = 10.0) -> bytes:  # noqa: ASYNC109
    assert node.router is not None
    channel = await node.router.channel_for(hospital)
    reply: bytes = await channel.unary_unary(f"/test.Edge/{method}")(b"ping", timeout=timeout)
    return reply


async def test_dead_edge_fails_the_call_within_the_liveness_bound_then_recovers(
    tmp_path: Path,
) -> None:
    async with CloudNode(config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.port is not None
        proxy = Proxy("127.0.0.1", node.port)
        await proxy.start()
        try:
            async with dialer(node, "h-001", proxy.port) as d:
                await asyncio.wait_for(d.connected.wait(), 10)
                assert await call(node, "h-001", "Echo") == b"ping"
                pending = asyncio.create_task(call(node, "h-001", "Hang", timeout=60))
                await until(lambda: any(s.active_streams for s in node.gateway.sessions()))
                # The edge vanishes without a word (power cut, NAT dropped the flow).
                proxy.blackhole()
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pending
                elapsed = time.monotonic() - started
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert elapsed < LIVENESS_BOUND + SLACK, elapsed
                # The network comes back; the edge redials and the next call succeeds.
                await proxy.cut()
                await proxy.restore()
                await until(lambda: node.gateway.pick("h-001") is not None)
                assert await call(node, "h-001", "Echo") == b"ping"
        finally:
            await proxy.close()


@pytest.mark.integration
async def test_redis_outage_keeps_local_tunnels_and_recovers_cross_node_calls(
    tmp_path: Path, redis_url: str
) -> None:
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    rhost, rport = host_port.rsplit(":", 1)
    proxy = Proxy(rhost, int(rport))
    await proxy.start()
    ns = f"test-{uuid.uuid4().hex}:"
    kw = {
        "redis_url": f"redis://127.0.0.1:{proxy.port}/15",
        "redis_namespace": ns,
        "presence_ttl": 1.5,
    }
    try:
        async with (
            CloudNode(config(tmp_path, "a", **kw), tunnel_config=FAST) as a,
            CloudNode(config(tmp_path, "b", **kw), tunnel_config=FAST) as b,
        ):
            assert a.port is not None
            assert b.port is not None
            async with dialer(a, "h-a", a.port) as da, dialer(a, "h-b", b.port) as db:
                await asyncio.wait_for(da.connected.wait(), 10)
                await asyncio.wait_for(db.connected.wait(), 10)
                await until(lambda: call_ok(a, "h-b"))
                await proxy.cut()  # Redis is gone for both nodes
                assert await call(a, "h-a", "Echo") == b"ping"  # local: no Redis needed
                with pytest.raises(HospitalUnavailable, match="tunnel presence is unavailable"):
                    await call(a, "h-b", "Echo")
                await proxy.restore()
                await until(lambda: call_ok(a, "h-b"))
                assert await call(b, "h-a", "Echo") == b"ping"
    finally:
        await proxy.restore()
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=f"{ns}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
        await proxy.close()


async def call_ok(node: CloudNode, hospital: str) -> bool:
    try:
        return await call(node, hospital, "Echo", timeout=2) == b"ping"
    except (HospitalUnavailable, grpc.aio.AioRpcError):
        return False


async def test_go_away_moves_the_edge_to_the_other_node_and_both_tunnels_carry_calls(
    tmp_path: Path,
) -> None:
    """A deploy drains node A: the edge's tunnel there moves to B, calls keep working."""
    a = CloudNode(config(tmp_path, "a"), tunnel_config=FAST)
    async with CloudNode(config(tmp_path, "b"), tunnel_config=FAST) as b:
        await a.start()
        try:
            assert a.credentials is not None
            assert a.tls is not None
            token = (await a.credentials.issue("h-1")).token
            cfg = DialerConfig(
                gateways=(f"localhost:{a.port}", f"localhost:{b.port}"),
                hospital_id="h-1",
                edge_id="e-1",
                credential=token,
                ca_cert=a.tls.ca_cert.read_bytes(),
                backoff_initial=0.05,
                backoff_max=0.2,
                tunnel=FAST,
            )
            async with Dialer(cfg, edge_server()) as d:
                # Two gateways: two tunnels, one per node.
                await until(lambda: all(s.connected for s in d.slots))
                assert {s.gateway for s in d.slots} == set(cfg.gateways)
                assert len(a.gateway.sessions("h-1")) == 1
                assert len(b.gateway.sessions("h-1")) == 1
                await a.shutdown()  # go-away to every edge, drain, stop
                await until(lambda: len(b.gateway.sessions("h-1")) == 2)
                assert all(s.gateway == cfg.gateways[1] for s in d.slots)
                # Both tunnels on B carry calls (round robin over a hospital's tunnels).
                before = [s.calls_started for s in b.gateway.sessions("h-1")]
                for _ in range(10):
                    assert await call(b, "h-1", "Echo") == b"ping"
                after = [s.calls_started for s in b.gateway.sessions("h-1")]
                assert all(x > y for x, y in zip(after, before, strict=True)), (before, after)
        finally:
            await a.shutdown()


async def test_forwarding_between_nodes_keeps_streaming_deadlines_and_cancellation(
    tmp_path: Path,
) -> None:
    """B has no tunnel of h-1: its calls go through A's internal endpoint to A's tunnel."""
    async with (
        CloudNode(config(tmp_path, "a"), tunnel_config=FAST) as a,
        CloudNode(config(tmp_path, "b"), tunnel_config=FAST) as b,
    ):
        assert a.router is not None
        assert b.router is not None
        assert b.presence is not None
        async with dialer(a, "h-1", a.port or 0) as d:
            await asyncio.wait_for(d.connected.wait(), 10)
            # B learns where h-1 is, as shared presence (Redis) would tell it.
            (session,) = a.gateway.sessions("h-1")
            assert a._sync is not None
            await b.presence.put(a._sync.record(session))
            assert b.gateway.sessions("h-1") == []
            channel = await b.router.channel_for("h-1")

            # Server streaming, headers and binary trailers arrive intact through A.
            stream = channel.unary_stream("/test.Edge/Count")(bytes([5]), timeout=10)
            got = [m async for m in stream]
            assert got == [bytes([i]) for i in range(5)]
            assert ("x-edge", "counted") in tuple(await stream.initial_metadata())
            assert ("x-total-bin", bytes([5])) in tuple(await stream.trailing_metadata())

            # The caller's deadline reaches the edge servicer through both hops.
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/test.Edge/Hang")(b"deadline", timeout=0.5)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 0.5 + SLACK
            await asyncio.wait_for(HANGS["deadline"].wait(), 5)

            # Cancelling at B cancels the servicer at the edge behind A.
            call = channel.unary_unary("/test.Edge/Hang")(b"cancel", timeout=30)
            await until(lambda: "cancel" in HANGS)
            call.cancel()
            await asyncio.wait_for(HANGS["cancel"].wait(), 5)
