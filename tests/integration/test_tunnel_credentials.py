"""Credentials and edge identity across real cloud nodes: revocation, limits, conflicts.

Nodes, edges (dialers) and operators' calls talk through real TLS sockets on loopback; with
two nodes, presence (and the revocation message) goes through the real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from cloud.gateway import INTERNAL_AUTH_KEY
from cloud.node import CloudNode
from frontend_server.dialer import Dialer
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from tests.integration.test_tunnel_cluster import FAST, edge, node_config
from tests.support.waiting import until
from tools.proxy import Proxy

UNAUTHENTICATED = "UNAUTHENTICATED: credential revoked"


@contextlib.asynccontextmanager
async def operations(
    node: CloudNode, tmp_path: Path
) -> AsyncIterator[tuple[operations_pb2_grpc.OperationsServiceStub, tuple[tuple[str, str]]]]:
    assert node.tls is not None
    creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
    secret = (tmp_path / "cluster-secret").read_text().strip()
    async with grpc.aio.secure_channel(f"localhost:{node.internal_port}", creds) as channel:
        yield operations_pb2_grpc.OperationsServiceStub(channel), ((INTERNAL_AUTH_KEY, secret),)


def ended_revoked(dialer: Dialer) -> bool:
    return all(s.failures >= 1 and s.last_error == UNAUTHENTICATED for s in dialer.slots)


async def wait_ended(dialer: Dialer, started: float) -> float:
    await until(lambda: ended_revoked(dialer), 10)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def redis_nodes(
    tmp_path: Path, redis_url: str, **extra: object
) -> AsyncIterator[tuple[CloudNode, CloudNode]]:
    ns = f"test-{uuid.uuid4().hex}:"
    kw = {"redis_url": redis_url, "redis_namespace": ns, "presence_ttl": 3.0, **extra}
    try:
        async with (
            CloudNode(node_config(tmp_path, "node-a", **kw), tunnel_config=FAST) as a,
            CloudNode(node_config(tmp_path, "node-b", **kw), tunnel_config=FAST) as b,
        ):
            yield a, b
    finally:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=f"{ns}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


# -- one node, no Redis -----------------------------------------------------------------------


async def test_a_credential_revoked_in_the_database_ends_its_tunnel_within_seconds(
    tmp_path: Path,
) -> None:
    """Nobody tells the node: its poll of the fleet database finds the revocation."""
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        cred = await node.credentials.issue("h-001")
        async with edge(node, "h-001", cred.token) as dialer:
            await asyncio.wait_for(dialer.connected.wait(), 10)
            started = time.monotonic()
            await node.credentials.revoke(cred.credential_id)
            took = await wait_ended(dialer, started)
            assert took <= 5.0, took
            assert node.gateway is not None
            assert node.gateway.sessions("h-001") == []
            logging.getLogger(__name__).info("revocation by poll took %.3fs", took)


async def test_close_credential_tunnels_closes_at_once_and_reports_the_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.tunnel")
    config = node_config(tmp_path, "n1", revocation_poll_seconds=60.0)  # the RPC alone
    async with CloudNode(config, tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node.gateway is not None
        cred = await node.credentials.issue("h-001")
        other = await node.credentials.issue("h-001")
        async with (
            edge(node, "h-001", cred.token, edge_id="e1") as d1,
            edge(node, "h-001", cred.token, edge_id="e2") as d2,
            edge(node, "h-001", other.token, edge_id="e3") as d3,
            operations(node, tmp_path) as (ops, md),
        ):
            for d in (d1, d2, d3):
                await asyncio.wait_for(d.connected.wait(), 10)
            await until(lambda: len(node.gateway.sessions("h-001")) == 3)
            listed = await ops.ListConnectedHospitals(
                operations_pb2.ListConnectedHospitalsRequest(credential_id=cred.credential_id),
                metadata=md,
                timeout=10,
            )
            assert sorted(c.edge_id for c in listed.connections) == ["e1", "e2"]
            assert all(c.peer.startswith("ipv4:127.0.0.1:") for c in listed.connections)
            # Not revoked yet: refused, nothing closed.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ops.CloseCredentialTunnels(
                    operations_pb2.CloseCredentialTunnelsRequest(credential_id=cred.credential_id),
                    metadata=md,
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            await node.credentials.revoke(cred.credential_id)
            started = time.monotonic()
            reply = await ops.CloseCredentialTunnels(
                operations_pb2.CloseCredentialTunnelsRequest(credential_id=cred.credential_id),
                metadata=md,
                timeout=10,
            )
            answered = time.monotonic() - started
            assert reply.closed_tunnels == 2
            assert dict(reply.closed_by_node) == {"n1": 2}
            assert list(reply.remaining) == []
            for d in (d1, d2):
                took = await wait_ended(d, started)
                assert took <= 5.0, took
            assert answered <= 5.0, answered
            logging.getLogger(__name__).info(
                "one node: tunnels ended %.3fs after the request, answer in %.3fs", took, answered
            )
            assert [s.hello.edge_id for s in node.gateway.sessions("h-001")] == ["e3"]
            # The edge waits long before trying a revoked credential again.
            assert all(s.retry_in >= 150.0 for s in d1.slots)
            closing = [r.getMessage() for r in caplog.records if "closing tunnel" in r.getMessage()]
            assert len(closing) == 2
            assert all(cred.credential_id in line for line in closing)
            assert not any(cred.token in r.getMessage() for r in caplog.records)
            # Asking again reports the same total; an unknown id is NOT_FOUND.
            again = await ops.CloseCredentialTunnels(
                operations_pb2.CloseCredentialTunnelsRequest(
                    credential_id=cred.credential_id, wait=duration_pb2.Duration(seconds=0)
                ),
                metadata=md,
                timeout=10,
            )
            assert again.closed_tunnels == 2
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ops.CloseCredentialTunnels(
                    operations_pb2.CloseCredentialTunnelsRequest(credential_id="nope"),
                    metadata=md,
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_refused_duplicates_are_listed_for_operators(tmp_path: Path) -> None:
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        real = await node.credentials.issue("h-001")
        stolen = await node.credentials.issue("h-001")
        async with (
            edge(node, "h-001", real.token) as first,
            operations(node, tmp_path) as (ops, md),
        ):
            await asyncio.wait_for(first.connected.wait(), 10)
            async with edge(node, "h-001", stolen.token) as intruder:
                await until(lambda: intruder.slots[0].failures >= 2)
                assert intruder.slots[0].last_error.startswith("ALREADY_EXISTS: edge id 'edge-a'")

            async def listed() -> list[operations_pb2.EdgeConflict]:
                reply = await ops.ListEdgeConflicts(
                    operations_pb2.ListEdgeConflictsRequest(), metadata=md, timeout=10
                )
                return list(reply.conflicts)

            await until(lambda: _at_least(listed, 2))
            (conflict,) = await listed()
            assert conflict.hospital_id == "h-001"
            assert conflict.edge_id == "edge-a"
            assert conflict.credential_id == stolen.credential_id
            assert conflict.peer.startswith("ipv4:127.0.0.1:")
            assert conflict.refused_by_node == conflict.holder_node == "n1"
            assert first.slots[0].connects == 1  # the real edge was never pushed off


async def test_one_credential_cannot_hold_more_than_four_tunnels(tmp_path: Path) -> None:
    """The default limit: one credential once opened 2,000 tunnels."""
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node.gateway is not None
        cred = await node.credentials.issue("h-001")
        async with contextlib.AsyncExitStack() as stack:
            dialers = [
                await stack.enter_async_context(edge(node, "h-001", cred.token, edge_id=f"e{i}"))
                for i in range(6)
            ]
            await until(
                lambda: (
                    sum(d.slots[0].connects for d in dialers) == 4
                    and sum(d.slots[0].failures >= 1 for d in dialers) == 2
                )
            )
            assert len(node.gateway.sessions("h-001")) == 4
            for d in dialers:
                if d.slots[0].connects == 0:
                    assert d.slots[0].last_error == (
                        f"RESOURCE_EXHAUSTED: credential {cred.credential_id} already holds 4 "
                        "live tunnel(s) on this node: the limit is 4 per credential "
                        "(max_tunnels_per_credential)"
                    )


async def _at_least(listed: object, refused: int) -> bool:
    found = await listed()  # type: ignore[operator]
    return bool(found) and found[0].refused_tunnels >= refused


# -- two nodes, presence in Redis ------------------------------------------------------------


@pytest.mark.integration
async def test_revocation_closes_the_tunnels_on_both_nodes_through_the_message(
    tmp_path: Path, redis_url: str
) -> None:
    # A slow poll: only the revocation message can close node A's tunnel within 5 s.
    async with redis_nodes(tmp_path, redis_url, revocation_poll_seconds=30.0) as (a, b):
        assert a.credentials is not None
        cred = await a.credentials.issue("h-001")
        gateways = (f"localhost:{a.port}", f"localhost:{b.port}")
        async with (
            edge(a, "h-001", cred.token, gateways=gateways) as dialer,
            operations(b, tmp_path) as (ops, md),
        ):
            await until(lambda: all(s.connected for s in dialer.slots))
            assert a.presence is not None
            presence = a.presence

            async def published() -> bool:
                return len(await presence.lookup("h-001")) == 2

            await until(published)
            await a.credentials.revoke(cred.credential_id)
            started = time.monotonic()
            reply = await ops.CloseCredentialTunnels(
                operations_pb2.CloseCredentialTunnelsRequest(credential_id=cred.credential_id),
                metadata=md,
                timeout=15,
            )
            answered = time.monotonic() - started
            assert reply.closed_tunnels == 2
            assert dict(reply.closed_by_node) == {"node-a": 1, "node-b": 1}
            assert list(reply.remaining) == []
            took = await wait_ended(dialer, started)
            assert took <= 5.0, took
            assert answered <= 5.0, answered
            logging.getLogger(__name__).info(
                "two nodes: tunnels ended %.3fs after the request, answer in %.3fs",
                took,
                answered,
            )


@pytest.mark.integration
async def test_the_credential_limit_holds_across_nodes(tmp_path: Path, redis_url: str) -> None:
    async with redis_nodes(tmp_path, redis_url, max_tunnels_per_credential=2) as (a, b):
        assert a.credentials is not None
        cred = await a.credentials.issue("h-001")
        only_a = (f"localhost:{a.port}",)
        async with (
            edge(a, "h-001", cred.token, gateways=only_a, edge_id="e1") as d1,
            edge(a, "h-001", cred.token, gateways=only_a, edge_id="e2") as d2,
        ):
            await asyncio.wait_for(d1.connected.wait(), 10)
            await asyncio.wait_for(d2.connected.wait(), 10)
            assert a.presence is not None
            presence = a.presence

            async def published() -> bool:
                return len(await presence.lookup("h-001")) == 2

            await until(published)
            async with edge(b, "h-001", cred.token, gateways=(f"localhost:{b.port}",)) as d3:
                await until(lambda: d3.slots[0].failures >= 1)
                assert d3.slots[0].connects == 0
                assert d3.slots[0].last_error == (
                    f"RESOURCE_EXHAUSTED: credential {cred.credential_id} already holds 2 live "
                    "tunnel(s) across the cloud: the limit is 2 per credential "
                    "(max_tunnels_per_credential)"
                )


@pytest.mark.integration
async def test_an_edge_id_held_on_another_node_is_probed_there(
    tmp_path: Path, redis_url: str
) -> None:
    async with redis_nodes(tmp_path, redis_url, liveness_probe_seconds=0.5) as (a, b):
        assert a.credentials is not None
        assert a.port is not None
        assert a.gateway is not None
        assert b.gateway is not None
        cred = await a.credentials.issue("h-001")
        proxy = Proxy("127.0.0.1", a.port)
        await proxy.start()
        try:
            via_proxy = (f"localhost:{proxy.port}",)
            to_b = (f"localhost:{b.port}",)
            async with edge(a, "h-001", cred.token, gateways=via_proxy) as real:
                await asyncio.wait_for(real.connected.wait(), 10)
                assert a.presence is not None
                presence = a.presence

                async def published() -> bool:
                    return len(await presence.lookup("h-001")) == 1

                await until(published)
                # Alive on A: a second edge with the same id on B is refused.
                async with edge(b, "h-001", cred.token, gateways=to_b) as twin:
                    await until(lambda: twin.slots[0].failures >= 1)
                    assert twin.slots[0].connects == 0
                    assert twin.slots[0].last_error.startswith(
                        "ALREADY_EXISTS: edge id 'edge-a' connection 0 is held by a live session"
                    )
                assert len(a.gateway.sessions("h-001")) == 1
                # Half-open on A (the NAT forgot it): the edge's new tunnel on B replaces it.
                proxy.blackhole()
                async with edge(b, "h-001", cred.token, gateways=to_b) as again:
                    started = time.monotonic()
                    await asyncio.wait_for(again.connected.wait(), 10)
                    assert time.monotonic() - started < 5.0
                    await until(lambda: a.gateway.sessions("h-001") == [])
                    assert len(b.gateway.sessions("h-001")) == 1
        finally:
            await proxy.close()
