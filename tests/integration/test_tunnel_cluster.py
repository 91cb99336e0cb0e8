"""Cloud nodes and edges over real TLS sockets: auth, routing across nodes, presence.

Everything runs in one event loop but talks through real gRPC servers on loopback: edges
dial a node's public endpoint, nodes forward to each other through their internal
endpoints, and (for several nodes) presence lives in the real Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from cloud.config import NodeConfig
from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY, HospitalUnavailable
from cloud.node import CloudNode
from frontend_server.admin import EdgeAdminServicer
from frontend_server.dialer import Dialer, DialerConfig
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from mesh import errors
from mesh.tunnel import TunnelConfig, TunnelServer
from mesh.version import CONTRACT_RELEASE
from tests.support.waiting import until

RELEASE_1_0_0 = Path(__file__).resolve().parents[2] / "proto/releases/1.0.0.binpb"

FAST = TunnelConfig(ping_interval=0.5, handshake_timeout=5.0, drain_grace=2.0)


def node_config(data_dir: Path, node_id: str, **kw: object) -> NodeConfig:
    return NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=data_dir,
        node_id=node_id,
        grace_seconds=2.0,
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def edge(
    node: CloudNode,
    hospital: str,
    token: str,
    *,
    gateways: tuple[str, ...] | None = None,
    edge_id: str = "edge-a",
    credential_backoff: float = 300.0,
) -> AsyncIterator[Dialer]:
    assert node.tls is not None
    server = TunnelServer()
    admin_pb2_grpc.add_EdgeAdminServiceServicer_to_server(
        EdgeAdminServicer(hospital_id=hospital, edge_id=edge_id, services=lambda: server.services),
        server,
    )
    cfg = DialerConfig(
        gateways=gateways or (f"localhost:{node.port}",),
        hospital_id=hospital,
        edge_id=edge_id,
        credential=token,
        ca_cert=node.tls.ca_cert.read_bytes(),
        backoff_initial=0.05,
        backoff_max=0.2,
        credential_backoff=credential_backoff,
        tunnel=FAST,
    )
    async with Dialer(cfg, server) as dialer:
        yield dialer


async def edge_info(node: CloudNode, hospital: str) -> admin_pb2.GetEdgeInfoResponse:
    assert node.router is not None
    channel = await node.router.channel_for(hospital)
    stub = admin_pb2_grpc.EdgeAdminServiceStub(channel)
    return await stub.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=10)


async def test_edge_dials_out_and_the_cloud_calls_it_back(tmp_path: Path) -> None:
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        cred = await node.credentials.issue("h-001")
        async with edge(node, "h-001", cred.token) as dialer:
            await asyncio.wait_for(dialer.connected.wait(), 10)
            info = await edge_info(node, "h-001")
            assert info.hospital_id == "h-001"
            assert info.edge_id == "edge-a"
            assert "hplus.hospital.v1.EdgeAdminService" in info.services
            # An unknown hospital fails fast with its last-seen time.
            assert node.router is not None
            with pytest.raises(HospitalUnavailable, match="h-404 is not connected"):
                await node.router.channel_for("h-404")


async def test_bad_credential_is_refused_and_never_connects(tmp_path: Path) -> None:
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        other = await node.credentials.issue("h-002")
        revoked = await node.credentials.issue("h-001")
        await node.credentials.revoke(revoked.credential_id)
        for token, expected in [
            ("hpc1.nope.nope", "UNAUTHENTICATED"),
            (revoked.token, "UNAUTHENTICATED"),
            (other.token, "PERMISSION_DENIED"),  # a hospital can never register as another
        ]:
            async with edge(node, "h-001", token, credential_backoff=0.1) as dialer:
                await until(lambda d=dialer: d.slots[0].failures >= 2)
                assert not dialer.connected.is_set()
                assert dialer.slots[0].connects == 0
                assert expected in dialer.slots[0].last_error, dialer.slots[0].last_error
        assert node.gateway is not None
        assert node.gateway.sessions("h-001") == []


async def test_a_second_edge_with_the_same_id_is_refused_while_the_first_answers(
    tmp_path: Path,
) -> None:
    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node.gateway is not None
        cred = await node.credentials.issue("h-001")
        async with edge(node, "h-001", cred.token) as first:
            await asyncio.wait_for(first.connected.wait(), 10)
            (held,) = node.gateway.sessions("h-001")
            # Two front-end servers configured with the same edge id (or a stolen
            # credential plus a known edge id) must not push each other off.
            async with edge(node, "h-001", cred.token) as second:
                await until(lambda: second.slots[0].failures >= 2)
                assert second.slots[0].connects == 0
                assert "ALREADY_EXISTS: edge id 'edge-a' connection 0 is held by a live " in (
                    second.slots[0].last_error
                )
                assert node.gateway.sessions("h-001") == [held]
                assert first.slots[0].connects == 1
                await second.shutdown(0)
            await first.shutdown(0)


@pytest.mark.integration
async def test_calls_entering_either_node_reach_every_hospital(
    tmp_path: Path, redis_url: str
) -> None:
    ns = f"test-{uuid.uuid4().hex}:"
    kw = {"redis_url": redis_url, "redis_namespace": ns, "presence_ttl": 3.0}
    a_cfg = node_config(tmp_path, "node-a", **kw)
    b_cfg = node_config(tmp_path, "node-b", **kw)
    async with CloudNode(a_cfg, tunnel_config=FAST) as a, CloudNode(b_cfg, tunnel_config=FAST) as b:
        assert a.credentials is not None
        t1 = (await a.credentials.issue("h-001")).token
        t2 = (await a.credentials.issue("h-002")).token
        async with (
            edge(a, "h-001", t1, gateways=(f"localhost:{a.port}",)) as e1,
            edge(b, "h-002", t2, gateways=(f"localhost:{b.port}",)) as e2,
        ):
            await asyncio.wait_for(e1.connected.wait(), 10)
            await asyncio.wait_for(e2.connected.wait(), 10)
            # Wait until both tunnels are published in Redis.
            assert a.presence is not None
            presence = a.presence

            async def published() -> bool:
                return len(await presence.all()) == 2

            await until(published)
            for entry in (a, b):
                for hospital in ("h-001", "h-002"):
                    info = await edge_info(entry, hospital)
                    assert info.hospital_id == hospital
            # Operators see both tunnels from either node's internal endpoint.
            assert b.tls is not None
            creds = grpc.ssl_channel_credentials(b.tls.ca_cert.read_bytes())
            secret = (tmp_path / "cluster-secret").read_text().strip()
            async with grpc.aio.secure_channel(f"localhost:{b.internal_port}", creds) as ch:
                ops = operations_pb2_grpc.OperationsServiceStub(ch)
                reply = await ops.ListConnectedHospitals(
                    operations_pb2.ListConnectedHospitalsRequest(),
                    metadata=((INTERNAL_AUTH_KEY, secret),),
                    timeout=10,
                )
                assert {(c.hospital_id, c.gateway_node) for c in reply.connections} == {
                    ("h-001", "node-a"),
                    ("h-002", "node-b"),
                }
                # An operator's call entering B's internal endpoint reaches h-001 on A.
                admin = admin_pb2_grpc.EdgeAdminServiceStub(ch)
                got = await admin.GetEdgeInfo(
                    admin_pb2.GetEdgeInfoRequest(),
                    metadata=((INTERNAL_AUTH_KEY, secret), (ROUTE_KEY, "h-001")),
                    timeout=10,
                )
                assert got.hospital_id == "h-001"
                # The edge's refusal crosses the tunnel and the peer hop with its details.
                wrapped = errors.wrap(admin)
                with pytest.raises(errors.FailedPrecondition) as refused:
                    await wrapped.GetConfig(
                        admin_pb2.GetConfigRequest(),
                        metadata=((INTERNAL_AUTH_KEY, secret), (ROUTE_KEY, "h-001")),
                        timeout=10,
                    )
                assert (refused.value.reason, refused.value.domain) == (
                    "NO_PROFILE",
                    "hospital.hplus",
                )
                with pytest.raises(errors.Unavailable) as unavailable:
                    await wrapped.GetEdgeInfo(
                        admin_pb2.GetEdgeInfoRequest(),
                        metadata=((INTERNAL_AUTH_KEY, secret), (ROUTE_KEY, "h-404")),
                        timeout=10,
                    )
                assert "h-404 is not connected (last seen never)" in unavailable.value.message
                assert (unavailable.value.reason, unavailable.value.domain) == (
                    "HOSPITAL_NOT_CONNECTED",
                    "cloud.hplus",
                )
                assert unavailable.value.resource == errors.Resource("hospital", "h-404")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await ops.ListConnectedHospitals(
                        operations_pb2.ListConnectedHospitalsRequest(), timeout=10
                    )
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        keys = [k async for k in a.presence._r.scan_iter(match=f"{ns}*")]  # type: ignore[attr-defined]
        if keys:
            await a.presence._r.delete(*keys)  # type: ignore[attr-defined]


async def test_field_census_counts_real_tunnel_traffic(tmp_path: Path) -> None:
    from cloud.census import CensusStore
    from cloud.db import create_engine

    cfg = node_config(tmp_path, "n1", census_rate=1.0)
    async with CloudNode(cfg, tunnel_config=FAST) as node:
        assert node.credentials is not None
        cred = await node.credentials.issue("h-001")
        async with edge(node, "h-001", cred.token) as dialer:
            await asyncio.wait_for(dialer.connected.wait(), 10)
            for _ in range(3):
                await edge_info(node, "h-001")
    # The node flushed on shutdown; the counts are in the registry database.
    engine = create_engine(cfg.registry_url)
    try:
        rows, since = await CensusStore(engine).rows(
            rpc="/hplus.hospital.v1.EdgeAdminService/GetEdgeInfo"
        )
    finally:
        await engine.dispose()
    by_path = {(r.direction, r.field_path): (r.messages, r.sampled) for r in rows}
    assert by_path[("response", "hospital_id")] == (3, 3)
    assert by_path[("response", "services")] == (3, 3)
    assert by_path[("response", "start_time.seconds")] == (3, 3)
    assert not any(d == "request" for d, _ in by_path)  # GetEdgeInfoRequest has no fields
    assert {r.contract_release for r in rows} == {CONTRACT_RELEASE}
    assert since is not None


async def test_edge_release_is_checked_against_the_registry(tmp_path: Path) -> None:
    from cloud.registry import Lifecycle, ReleaseStore

    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node._registry_engine is not None
        token = (await node.credentials.issue("h-001")).token

        async def dial(release: str) -> Dialer:
            assert node.tls is not None
            server = TunnelServer()
            cfg = DialerConfig(
                gateways=(f"localhost:{node.port}",),
                hospital_id="h-001",
                edge_id="e",
                credential=token,
                ca_cert=node.tls.ca_cert.read_bytes(),
                backoff_initial=0.05,
                backoff_max=0.2,
                tunnel=FAST,
                contract_release=release,
            )
            return Dialer(cfg, server)

        # An empty registry checks nothing: a new embedded node accepts any release.
        async with await dial("9.9.9") as d:
            await asyncio.wait_for(d.connected.wait(), 10)
        store = ReleaseStore(node._registry_engine)
        image = RELEASE_1_0_0.read_bytes()
        await store.push(version="1.0.0", image=image, actor="test")
        # Unknown release: refused with a clear status.
        async with await dial("9.9.9") as d:
            await until(lambda d=d: d.slots[0].failures >= 1)
            assert d.slots[0].connects == 0
            assert "FAILED_PRECONDITION" in d.slots[0].last_error
            assert "'9.9.9' is unknown to the registry" in d.slots[0].last_error
        # A known release in the window: accepted, no warning.
        async with await dial("1.0.0") as d:
            await asyncio.wait_for(d.connected.wait(), 10)
            (session,) = node.gateway.sessions("h-001")
            assert list(session.welcome.warnings) == []
            await d.shutdown(0)
        # Deprecated: accepted with a warning that operators see.
        await store.set_lifecycle("1.0.0", Lifecycle.DEPRECATED, actor="test")
        async with await dial("1.0.0") as d:
            await asyncio.wait_for(d.connected.wait(), 10)
            await until(lambda: len(node.gateway.sessions("h-001")) == 1)
            (session,) = node.gateway.sessions("h-001")
            assert list(session.welcome.warnings) == ["contract release 1.0.0 is deprecated"]
            await d.shutdown(0)
