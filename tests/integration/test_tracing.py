"""One request id across every hop, on real processes' parts over real TLS sockets.

Two nodes share presence in the real Redis; the hospital's edge holds its tunnel on node B
only, so a call entering node A is forwarded to B, goes through the tunnel to the edge,
its servicer and adapter, and reaches the HIS simulator. The caller's ``traceparent``
must arrive at the HIS (HTTP header, SOAP header, SQL comment), and ``LookupTrace`` on A
must return the whole tree: A, B, the edge and the HIS call, each span in its store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event

from cloud.config import NodeConfig
from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
from cloud.node import CloudNode
from cloud.traces import failing_span
from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from hplus.hospital.v1 import appointment_pb2, appointment_pb2_grpc, common_pb2
from mesh.observability import REQUEST_ID_KEY, ObservabilityConfig
from tests.integration.hospital_env import (
    FAST,
    edge_config,
    his_url,
    simulator,
    write_profile,
)
from tests.support.waiting import until
from tools.cli._trace import render_trace
from tools.his_sim import DbHis, Outage

PATIENT = "P00000010"


def _node_config(data_dir: Path, node_id: str, redis_url: str, ns: str, **extra: Any) -> NodeConfig:
    observability = extra.pop("observability", {})
    return NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=data_dir,
        node_id=node_id,
        grace_seconds=1.0,
        redis_url=redis_url,
        redis_namespace=ns,
        presence_ttl=3.0,
        # One data directory (dev TLS material and the cluster secret shared), one span
        # store per node: B's spans reach A only through B's LookupTrace.
        observability=ObservabilityConfig(
            traces_database_url=f"sqlite+aiosqlite:///{data_dir / f'traces-{node_id}.db'}",
            **observability,
        ),
        **extra,
    )


@dataclasses.dataclass
class Cluster:
    a: CloudNode
    b: CloudNode
    app: EdgeApp
    his: Any
    hospital_id: str
    secret: str

    def internal(self, node: CloudNode) -> grpc.aio.Channel:
        assert node.tls is not None
        creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
        return grpc.aio.secure_channel(f"localhost:{node.internal_port}", creds)

    async def flush(self) -> None:
        for tracing in (self.a.tracing, self.b.tracing, self.app.tracing):
            assert tracing is not None
            await tracing.flush()


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    redis_url: str,
    dialect: str,
    *,
    a_config: dict[str, Any] | None = None,
    b_config: dict[str, Any] | None = None,
    edge: dict[str, Any] | None = None,
) -> AsyncIterator[Cluster]:
    """Nodes A and B and the hospital's edge on B; ``a_config``, ``b_config``: more of each node's
    NodeConfig (``observability``: a dict of more of its ObservabilityConfig); ``edge``: more
    of the edge's EdgeConfig."""
    ns = f"test-{uuid.uuid4().hex}:"
    cloud_dir = tmp_path / "cloud"
    async with (
        simulator(dialect) as his,
        CloudNode(
            _node_config(cloud_dir, "node-a", redis_url, ns, **(a_config or {})), tunnel_config=FAST
        ) as a,
        CloudNode(
            _node_config(cloud_dir, "node-b", redis_url, ns, **(b_config or {})), tunnel_config=FAST
        ) as b,
    ):
        try:
            profile = load_profile(write_profile(tmp_path, dialect, his_url(his)))
            assert b.credentials is not None
            token = (await b.credentials.issue(profile.hospital_id)).token
            app = EdgeApp(
                dataclasses.replace(
                    edge_config(b, profile, token, tmp_path / "edge", his), **(edge or {})
                )
            )
            async with app:
                assert app.dialer is not None
                await asyncio.wait_for(app.dialer.connected.wait(), 10)
                assert a.presence is not None
                presence = a.presence

                async def published() -> bool:
                    return bool(await presence.lookup(profile.hospital_id))

                await until(published)
                secret = (cloud_dir / "cluster-secret").read_text().strip()
                yield Cluster(a, b, app, his, profile.hospital_id, secret)
        finally:
            assert a.presence is not None
            keys = [k async for k in a.presence._r.scan_iter(match=f"{ns}*")]  # type: ignore[attr-defined]
            if keys:
                await a.presence._r.delete(*keys)  # type: ignore[attr-defined]


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _list_appointments(c: Cluster, traceparent: str) -> Any:
    async with c.internal(c.a) as channel:
        stub = appointment_pb2_grpc.AppointmentServiceStub(channel)
        return await stub.ListPatientAppointments(
            appointment_pb2.ListPatientAppointmentsRequest(
                patient=common_pb2.PatientRef(patient_id=PATIENT)
            ),
            metadata=(
                (INTERNAL_AUTH_KEY, c.secret),
                (ROUTE_KEY, c.hospital_id),
                ("traceparent", traceparent),
            ),
            timeout=15,
        )


async def _lookup(c: Cluster, trace_id: str) -> operations_pb2.LookupTraceResponse:
    await c.flush()
    async with c.internal(c.a) as channel:
        ops = operations_pb2_grpc.OperationsServiceStub(channel)
        answer: operations_pb2.LookupTraceResponse = await ops.LookupTrace(
            operations_pb2.LookupTraceRequest(trace_id=trace_id),
            metadata=((INTERNAL_AUTH_KEY, c.secret),),
            timeout=15,
        )
        return answer


@pytest.mark.parametrize("dialect", ["rest", "soap", "db"])
async def test_one_trace_id_from_the_caller_to_the_his_and_back(
    tmp_path: Path, redis_url: str, dialect: str
) -> None:
    statements: list[str] = []
    async with cluster(tmp_path, redis_url, dialect) as c:
        if isinstance(c.his, DbHis):
            # The HIS database's view of our statements (what its statement log records).
            engine = c.app.adapter._engine.sync_engine

            @event.listens_for(engine, "before_cursor_execute")
            def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                statements.append(statement)

        c.his.request_log.clear()
        trace_id, traceparent = _traceparent()
        await _list_appointments(c, traceparent)

        # The HIS saw the same trace id (HTTP header, SOAP header, SQL comment).
        if isinstance(c.his, DbHis):
            assert any(f"/*traceparent='00-{trace_id}-" in s for s in statements), statements
        else:
            # (The edge's own background reads of the HIS carry traces of their own.)
            carried = [
                (r.operation, r.traceparent)
                for r in c.his.request_log
                if r.traceparent.startswith(f"00-{trace_id}-")
            ]
            assert carried, [(r.operation, r.traceparent) for r in c.his.request_log]
            assert all("appointment" in operation for operation, _ in carried), carried

        answer = await _lookup(c, trace_id)
        spans = list(answer.spans)
        nodes = {(s.tier, s.node) for s in spans}
        assert (operations_pb2.SPAN_TIER_CLOUD, "node-a") in nodes
        assert (operations_pb2.SPAN_TIER_CLOUD, "node-b") in nodes
        assert (operations_pb2.SPAN_TIER_EDGE, "edge-test") in nodes
        his_spans = [s for s in spans if s.tier == operations_pb2.SPAN_TIER_HIS]
        assert his_spans
        assert all(s.service == "his" for s in his_spans)
        # One tree: every span's parent is in the trace except the caller's.
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_span_id not in ids]
        assert len(roots) == 1, render_trace(answer)
        assert roots[0].node == "node-a"
        assert roots[0].parent_span_id == traceparent.split("-")[2]
        assert answer.complete
        # The chain of hops, from the HIS call back up to A's entry.
        by_id = {s.span_id: s for s in spans}
        hop = his_spans[0]
        chain = []
        while hop.span_id in by_id:
            chain.append((hop.tier, hop.node, hop.kind))
            if hop.parent_span_id not in by_id:
                break
            hop = by_id[hop.parent_span_id]
        assert [n for _, n, _ in chain] == [
            "edge-test",  # his.*
            "edge-test",  # the edge's servicer
            "node-b",  # tunnel call (client)
            "node-b",  # forwarded call (server)
            "node-a",  # forward to the peer (client)
            "node-a",  # the caller's call (server)
        ]
        lines = render_trace(answer)
        assert lines[0].startswith(f"trace {trace_id}")
        assert not any("failed here" in line for line in lines)


async def test_the_failing_hop_is_marked_and_the_request_id_is_returned(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from mesh.logs import RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.WARNING, logger="frontend_server.his")
    async with cluster(tmp_path, redis_url, "rest") as c:
        await c.his.inject(Outage(mode="503"))
        trace_id, traceparent = _traceparent()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _list_appointments(c, traceparent)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        answer = await _lookup(c, trace_id)
        culprit = failing_span(answer.spans)
        failing = next(s for s in answer.spans if s.span_id == culprit)
        assert failing.tier == operations_pb2.SPAN_TIER_HIS
        assert failing.attributes["his.error"] == "unavailable"
        assert any("<== failed here" in line and "his/" in line for line in render_trace(answer))
        # The edge logged the HIS failure once, with the request id.
        his_lines = [r for r in caplog.records if r.name == "frontend_server.his"]
        assert len(his_lines) == 1
        assert his_lines[0].getMessage().startswith("HIS rest call list_appointments failed")
        assert "(unavailable)" in his_lines[0].getMessage()
        assert his_lines[0].request_id == trace_id  # type: ignore[attr-defined]

        # The public endpoint returns the request id to apps, made or taken from them.
        assert c.a.tls is not None
        creds = grpc.ssl_channel_credentials(c.a.tls.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{c.a.port}", creds) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            call = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            await call
            made = dict(await call.initial_metadata())[REQUEST_ID_KEY]
            assert len(made) == 32
            assert made != trace_id
            call = health.Check(
                health_pb2.HealthCheckRequest(), metadata=(("traceparent", traceparent),), timeout=5
            )
            await call
            assert dict(await call.initial_metadata())[REQUEST_ID_KEY] == trace_id
        # An unknown trace is NOT_FOUND; a malformed id INVALID_ARGUMENT.
        async with c.internal(c.a) as channel:
            ops = operations_pb2_grpc.OperationsServiceStub(channel)
            md = ((INTERNAL_AUTH_KEY, c.secret),)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await ops.LookupTrace(
                    operations_pb2.LookupTraceRequest(trace_id=secrets.token_hex(16)),
                    metadata=md,
                    timeout=10,
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await ops.LookupTrace(
                    operations_pb2.LookupTraceRequest(trace_id="xyz"), metadata=md, timeout=10
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tunnel_connect_refusal_and_drop_are_logged_with_request_id_and_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hplus.tunnel.v1 import tunnel_pb2_grpc
    from mesh.logs import MaskingFilter, RequestIdFilter
    from tests.integration.test_tunnel_cluster import edge, node_config

    caplog.handler.addFilter(RequestIdFilter())
    caplog.handler.addFilter(MaskingFilter())
    caplog.set_level(logging.INFO, logger="mesh.tunnel")

    def lines(start: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(start)]

    async with CloudNode(node_config(tmp_path, "n1"), tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node.tls is not None
        token = (await node.credentials.issue("h-001")).token
        async with edge(node, "h-001", token) as dialer:
            await asyncio.wait_for(dialer.connected.wait(), 10)
            up = lines("tunnel up: hospital h-001, edge edge-a, connection 0")
            assert len(up) == 1
            assert len(up[0].request_id) == 32  # type: ignore[attr-defined]
        # The edge went away: one line with the cause.
        await until(lambda: bool(lines("tunnel down: hospital h-001")))
        down = lines("tunnel down: hospital h-001")[0]
        assert down.request_id == up[0].request_id  # type: ignore[attr-defined]
        assert "after" in down.getMessage()

        # A hello for another hospital than the credential's: refused, with the reason; the
        # hospital id the peer sent is masked like any identifier in a line.
        async with edge(node, "13800138000", token, edge_id="edge-x") as wrong:
            await until(lambda: bool(lines("tunnel refused: hospital h-001")))
            assert not wrong.connected.is_set()
        refused = lines("tunnel refused: hospital h-001")[0].getMessage()
        assert "PERMISSION_DENIED credential is not for hospital '138****8000'" in refused
        assert "13800138000" not in refused

        # A peer hammering with bad credentials gets a few lines, not one per attempt.
        creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as channel:
            stub = tunnel_pb2_grpc.TunnelServiceStub(channel)
            for _ in range(30):
                call = stub.Connect(iter(()), metadata=(("authorization", "Bearer nope"),))
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    async for _ in call:
                        pass
                assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bad_lines = lines("tunnel refused from")
        assert 1 <= len(bad_lines) <= 5
        assert all(len(r.request_id) == 32 for r in bad_lines)  # type: ignore[attr-defined]
    assert lines("draining 0 tunnel(s) on node n1")


async def test_tunnel_rtt_reaches_the_listing_and_its_json_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_tunnel_cluster import edge, node_config
    from tools.cli import main

    # The cloud side pings too (it used to only answer the edge's pings: RTT stayed "-").
    cfg = dataclasses.replace(
        node_config(tmp_path, "n1"),
        presence_ttl=1.5,
        observability=ObservabilityConfig(metrics_listen="127.0.0.1:0"),
    )
    async with CloudNode(cfg, tunnel_config=FAST) as node:
        assert node.credentials is not None
        assert node.gateway is not None
        token = (await node.credentials.issue("h-001")).token
        async with edge(node, "h-001", token) as dialer:
            await asyncio.wait_for(dialer.connected.wait(), 10)
            gateway = node.gateway
            await until(lambda: any(s.rtt is not None for s in gateway.sessions("h-001")))
            assert node.presence is not None
            presence = node.presence

            async def published() -> bool:
                return any(r.rtt_ms is not None for r in await presence.lookup("h-001"))

            await until(published)
            args = ["cloud", "tunnels", "--format", "json", "--data-dir", str(tmp_path)]
            args += ["--node", f"localhost:{node.internal_port}"]
            assert await asyncio.to_thread(main, args) == 0
            # The node's /metrics: its tunnels, their RTT, the RPCs it served and made.
            assert node.metrics is not None
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{node.metrics.port}/metrics") as response,
            ):
                body = await response.text()
            assert 'hplus_tunnels{node="n1"} 1.0' in body
            assert 'hplus_tunnel_rtt_seconds{connection="0",hospital_id="h-001",node="n1"}' in body
            assert (
                'grpc_server_handled_total{grpc_code="OK",grpc_method="ListConnectedHospitals"'
                in body
            )
    listing = json.loads(capsys.readouterr().out)
    (row,) = listing["tunnels"]
    assert row["hospital_id"] == "h-001"
    assert row["rtt_ms"] is not None
    assert 0 < row["rtt_ms"] < 5000
    assert listing["conflicts"] == []
