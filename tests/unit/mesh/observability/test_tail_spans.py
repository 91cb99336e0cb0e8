"""Which spans are kept: sampled traces and failed calls; an unsampled success stores nothing.

The decision is tail-style (`CallSpan`): a call's span costs ids and a clock reading, and
becomes a stored `SpanRecord` only when it ends, if its trace is sampled (by trace id, or
the caller's sampled flag where obeyed) or the call failed. These tests drive the real
hooks (tunnel client and server, the gRPC server interceptor's span) against a real span
ring and read back what was stored.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import grpc
import pytest
from opentelemetry.trace import SpanKind

from frontend_server.traces import SpanRing
from hplus.tunnel.v1 import tunnel_pb2
from mesh.logs import CURRENT_SPAN, RequestIdFilter, current_request_id
from mesh.observability import (
    RPC_METRICS,
    Tracing,
    TunnelClientHook,
    TunnelServerHook,
    current_traceparent,
)
from mesh.tunnel import CallInfo

METHOD = "/hplus.test.v1.Tail/Call"


def _info(trace: tunnel_pb2.TraceContext | None = None) -> CallInfo:
    return CallInfo(
        method=METHOD, metadata=[], trace=trace, hospital_id="h-7", session="s-1", started=0.0
    )


def _trace_with(tracing: Tracing, sampled: bool) -> str:
    """A trace id the tracing decides is (not) sampled (by its low 56 bits)."""
    while True:
        trace_id = secrets.token_hex(16)
        if tracing.sampled(int(trace_id, 16)) is sampled:
            return trace_id


@pytest.fixture
async def ring(tmp_path: Path) -> SpanRing:
    store = SpanRing(tmp_path / "traces.db", capacity=1000)
    store.open()
    yield store  # type: ignore[misc]
    store.close()


def test_the_sampling_decision_follows_the_trace_id_and_the_obeyed_flag() -> None:
    tracing = Tracing(service="t", node="n", sink=None, sample_rate=0.25)
    kept = _trace_with(tracing, True)
    dropped = _trace_with(tracing, False)
    parent = secrets.token_hex(8)
    assert tracing.serve(METHOD, SpanKind.SERVER, f"00-{kept}-{parent}-00").sampled
    assert not tracing.serve(METHOD, SpanKind.SERVER, f"00-{dropped}-{parent}-00").sampled
    # A peer's sampled flag is obeyed; an app's (public endpoint) is not.
    flagged = f"00-{dropped}-{parent}-01"
    assert tracing.serve(METHOD, SpanKind.SERVER, flagged).sampled
    assert not tracing.serve(METHOD, SpanKind.SERVER, flagged, honor_sampled=False).sampled
    # The caller's trace id is the request id; a malformed header starts a new trace.
    assert tracing.serve(METHOD, SpanKind.SERVER, flagged).trace_hex == dropped
    for bad in (f"00-{dropped.upper()}-{parent}-00", f"00-{'0' * 32}-{parent}-00", "x"):
        fresh = tracing.serve(METHOD, SpanKind.SERVER, bad)
        assert fresh.trace_hex != dropped
        assert len(fresh.trace_hex) == 32
        assert fresh.parent_hex == ""
    # The share of new traces sampled is the rate (every process decides alike).
    roots = [tracing.begin(METHOD, SpanKind.CLIENT) for _ in range(4000)]
    share = sum(r.sampled for r in roots) / len(roots)
    assert 0.2 < share < 0.3, share
    assert all(r.sampled is tracing.sampled(int(r.trace_hex, 16)) for r in roots)
    assert (
        not Tracing(service="t", node="n", sink=None, sample_rate=0.0)
        .serve(METHOD, SpanKind.SERVER, f"00-{'0' * 31}1-{parent}-00")
        .sampled
    )
    assert (
        Tracing(service="t", node="n", sink=None, sample_rate=1.0)
        .serve(METHOD, SpanKind.SERVER, f"00-{'f' * 32}-{parent}-00")
        .sampled
    )


async def test_unsampled_successful_calls_store_nothing(ring: SpanRing) -> None:
    tracing = Tracing(service="t", node="n", sink=ring, sample_rate=0.0)
    client, server = TunnelClientHook(tracing), TunnelServerHook(tracing)
    rpc = RPC_METRICS.counts("server", "unary", METHOD)
    before = (rpc.started, rpc.ok)
    for _ in range(50):
        call = _info()
        client.on_start(call)
        assert call.trace is not None
        edge = _info(call.trace)
        server.on_start(edge)
        server.on_end(edge, grpc.StatusCode.OK, "")
        client.on_end(call, grpc.StatusCode.OK, "")
    await tracing.flush()
    assert tracing.kept == 0
    assert ring.count() == 0
    # Counted all the same.
    assert (rpc.started, rpc.ok) == (before[0] + 50, before[1] + 50)


async def test_a_failing_call_keeps_its_spans_as_one_tree(ring: SpanRing) -> None:
    tracing = Tracing(service="t", node="n", sink=ring, sample_rate=0.0)
    client, server = TunnelClientHook(tracing), TunnelServerHook(tracing)
    call = _info()
    client.on_start(call)
    assert call.trace is not None
    trace_id = call.trace.traceparent.split("-")[1]
    edge = _info(call.trace)
    server.on_start(edge)
    # While the servicer runs, its span is current: log lines and the HIS's traceparent
    # carry the caller's trace id; a child (an HIS call) fails too.
    assert current_request_id() == trace_id
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "inside", None, None)
    RequestIdFilter().filter(record)
    assert record.request_id == trace_id  # type: ignore[attr-defined]
    his = tracing.begin("his.list_appointments", SpanKind.CLIENT)
    token = CURRENT_SPAN.set(his)
    assert current_traceparent().startswith(f"00-{trace_id}-")
    CURRENT_SPAN.reset(token)
    his.end(14, "unavailable: 503")
    server.on_end(edge, grpc.StatusCode.UNAVAILABLE, "HIS unavailable")
    assert current_request_id() == ""
    client.on_end(call, grpc.StatusCode.UNAVAILABLE, "HIS unavailable")
    await tracing.flush()
    spans = await ring.lookup(trace_id)
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {METHOD[1:], "his.list_appointments"}
    assert len(spans) == 3
    cloud = next(s for s in spans if s.kind == "client" and s.name == METHOD[1:])
    served = next(s for s in spans if s.kind == "server")
    # One tree: cloud client -> edge server -> HIS call, each with its status.
    assert cloud.parent_span_id == ""
    assert served.parent_span_id == cloud.span_id
    assert by_name["his.list_appointments"].parent_span_id == served.span_id
    assert (cloud.code, served.code) == (14, 14)
    assert served.message == "UNAVAILABLE: HIS unavailable"
    assert cloud.hospital_id == "h-7"
    assert cloud.attributes == {"tunnel.session": "s-1"}
    assert all(s.duration_ns >= 0 and s.start_ns > 0 for s in spans)


async def test_sampled_traces_keep_their_successful_calls(ring: SpanRing) -> None:
    tracing = Tracing(service="t", node="n", sink=ring, sample_rate=0.0)
    client, server = TunnelClientHook(tracing), TunnelServerHook(tracing)
    # A sampled caller (an operator's traceparent on a forwarded call) is obeyed.
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    caller = tracing.serve("/hplus.x.v1.Api/Get", SpanKind.SERVER, f"00-{trace_id}-{parent}-01")
    token = CURRENT_SPAN.set(caller)
    call = _info()
    client.on_start(call)
    CURRENT_SPAN.reset(token)
    assert call.trace is not None
    assert call.trace.traceparent.endswith("-01")
    edge = _info(call.trace)
    server.on_start(edge)
    server.on_end(edge, grpc.StatusCode.OK, "")
    client.on_end(call, grpc.StatusCode.OK, "")
    caller.end(0)
    await tracing.flush()
    spans = await ring.lookup(trace_id)
    assert len(spans) == 3
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id not in ids]
    assert [r.parent_span_id for r in roots] == [parent]
    assert all(s.code == 0 for s in spans)


async def test_the_server_interceptor_keeps_failures_and_returns_the_request_id(
    ring: SpanRing,
) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from mesh.observability import REQUEST_ID_KEY, ServerObservability

    tracing = Tracing(service="t", node="n", sink=ring, sample_rate=0.0)
    server = grpc.aio.server(
        interceptors=[ServerObservability(tracing, return_request_id=True)],
        options=[("grpc.so_reuseport", 0)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            ok_ids = []
            for _ in range(20):
                call = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                await call
                ok_ids.append(dict(await call.initial_metadata())[REQUEST_ID_KEY])
            # An app's sampled flag is not obeyed at the public endpoint: still nothing kept.
            trace_id = secrets.token_hex(16)
            flagged = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
            call = stub.Check(health_pb2.HealthCheckRequest(), metadata=flagged, timeout=5)
            await call
            assert dict(await call.initial_metadata())[REQUEST_ID_KEY] == trace_id
            failing = stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await failing
            failed_id = dict(await failing.initial_metadata())[REQUEST_ID_KEY]
    finally:
        await server.stop(None)
    await tracing.flush()
    assert len(set(ok_ids)) == 20
    assert ring.count() == 1  # the failure only
    (kept,) = await ring.lookup(failed_id)
    assert kept.name == "grpc.health.v1.Health/Check"
    assert kept.kind == "server"
    assert kept.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert kept.message.startswith("NOT_FOUND")
