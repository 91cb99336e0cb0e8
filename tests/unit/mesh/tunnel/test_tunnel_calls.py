"""Calls through a real tunnel (grpc.aio sockets) behave like direct grpc.aio calls."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_status import rpc_status

import mesh.tunnel
from tests.unit.mesh.tunnel.tunnel_harness import I32, B, EchoStub, Rig, S, rich_status, running_rig


@pytest.fixture
async def rig():
    async with running_rig() as value:
        yield value


async def outcome(call):
    """Everything a client can observe about a finished unary-response call."""
    try:
        response = await call
        error = None
    except grpc.aio.AioRpcError as err:
        response = None
        error = (err.code(), err.details(), tuple(err.trailing_metadata() or ()))
    return (
        response,
        error,
        tuple(await call.initial_metadata()),
        tuple(await call.trailing_metadata()),
        await call.code(),
        await call.details(),
    )


async def both(rig: Rig, make):
    return await outcome(make(rig.direct_stub)), await outcome(make(rig.tunnel_stub))


def test_public_surface_is_pinned():
    assert sorted(mesh.tunnel.__all__) == sorted(
        [
            "SUPPORTED_REVISIONS", "Authenticator", "CallHook", "CallInfo", "CloudGrpcTransport",
            "EdgeGrpcTransport", "EdgeIdentity", "EdgeTunnel", "HookRejection", "MemoryTransport",
            "ProtocolViolation", "Role", "Session", "SessionPicker", "Transport", "TransportError",
            "TunnelChannel", "TunnelClosed", "TunnelConfig", "TunnelGateway", "TunnelRefused",
            "TunnelServer", "TunnelServicerContext", "bearer_token", "memory_transport_pair",
            "call_time_left", "Claim", "ClusterView", "EdgeConflict", "Holder", "Principal",
            "TunnelOrigin",
        ]
    )  # fmt: skip


async def test_unary_matches_direct(rig: Rig):
    direct, tunnel = await both(rig, lambda stub: stub.Unary(S(value="hi"), timeout=5))
    assert tunnel == direct
    assert tunnel[0] == S(value="echo:hi")


async def test_metadata_and_binary_values_survive_exactly(rig: Rig):
    md = (("x-plain", "v1"), ("x-plain", "v2"), ("x-data-bin", b"\x00\xff\x10"))
    direct, tunnel = await both(
        rig, lambda stub: stub.Unary(S(value="metadata"), metadata=md, timeout=5)
    )
    assert tunnel == direct
    assert ("x-initial-bin", b"\x00\x01") in tunnel[2]
    assert ("x-trailer-bin", b"\xff\x00") in tunnel[3]
    seen_direct, seen_tunnel = rig.servicer.state.metadata
    keep = {"x-plain", "x-data-bin"}
    assert [p for p in seen_tunnel if p[0] in keep] == [p for p in seen_direct if p[0] in keep]
    assert [p for p in seen_tunnel if p[0] in keep] == list(md)


async def test_status_details_survive_exactly(rig: Rig):
    direct, tunnel = await both(rig, lambda stub: stub.Unary(S(value="abort"), timeout=5))
    assert tunnel == direct
    assert tunnel[4] is grpc.StatusCode.FAILED_PRECONDITION
    call = rig.tunnel_stub.Unary(S(value="abort"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    assert await rpc_status.aio.from_call(call) == rich_status()


async def test_set_code_and_servicer_exception_match_direct(rig: Rig):
    direct, tunnel = await both(rig, lambda stub: stub.Unary(S(value="set-code"), timeout=5))
    assert tunnel == direct
    assert tunnel[4] is grpc.StatusCode.NOT_FOUND
    direct, tunnel = await both(rig, lambda stub: stub.Unary(S(value="raise"), timeout=5))
    assert tunnel[4] is direct[4] is grpc.StatusCode.UNKNOWN
    assert tunnel[5] == direct[5]


async def test_server_streaming_matches_direct(rig: Rig):
    for stub in (rig.direct_stub, rig.tunnel_stub):
        call = stub.ServerStream(I32(value=40), timeout=10)
        got = [message async for message in call]
        assert [len(m.value) for m in got] == [16 * 1024] * 40
        assert await call.code() is grpc.StatusCode.OK
    results = []
    for stub in (rig.direct_stub, rig.tunnel_stub):
        call = stub.ServerStream(I32(value=7), timeout=10)
        got: list = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(call, got)
        results.append((len(got), err.value.code(), err.value.details()))
    assert results[0] == results[1] == (3, grpc.StatusCode.ABORTED, "stopped early")


async def collect(call, into):
    async for message in call:
        into.append(message)


async def test_read_api_and_eof(rig: Rig):
    call = rig.tunnel_stub.ServerStream(I32(value=-2), timeout=5)
    assert await call.read() == B(value=b"\x00" * 10)
    assert await call.read() == B(value=b"\x01" * 10)
    assert await call.read() is grpc.aio.EOF


async def test_client_streaming_matches_direct(rig: Rig):
    async def requests():
        for word in ("a", "b", "c"):
            yield S(value=word)

    direct, tunnel = await both(rig, lambda stub: stub.ClientStream(requests(), timeout=5))
    assert tunnel == direct
    assert tunnel[0] == S(value="a+b+c")
    call = rig.tunnel_stub.ClientStream(timeout=5)
    await call.write(S(value="x"))
    await call.write(S(value="y" * 300_000))
    await call.done_writing()
    assert (await call).value == "x+" + "y" * 300_000


async def test_bidi_matches_direct(rig: Rig):
    for stub in (rig.direct_stub, rig.tunnel_stub):
        call = stub.Bidi(timeout=5)
        for word in ("one", "two"):
            await call.write(S(value=word))
            assert await call.read() == S(value=word.upper())
        await call.write(S(value="stop"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE
        assert await call.code() is grpc.StatusCode.OUT_OF_RANGE
        assert await call.details() == "stop requested"


async def test_unknown_method_ends_only_that_stream(rig: Rig):
    direct, tunnel = await both(rig, lambda stub: stub.Missing(S(value="?"), timeout=5))
    assert tunnel[4] is direct[4] is grpc.StatusCode.UNIMPLEMENTED
    assert tunnel[5] == direct[5]
    assert (await rig.tunnel_stub.Unary(S(value="after"), timeout=5)).value == "echo:after"


async def test_deadline_propagates_to_the_servicer(rig: Rig):
    await rig.tunnel_stub.Unary(S(value="deadline"), timeout=3.0)
    await rig.direct_stub.Unary(S(value="deadline"), timeout=3.0)
    through_tunnel, direct = rig.servicer.state.remaining
    assert through_tunnel is not None
    assert 2.0 < through_tunnel <= 3.0
    assert direct is not None
    assert abs(through_tunnel - direct) < 0.9


async def test_deadline_exceeded_cancels_the_servicer(rig: Rig):
    call = rig.tunnel_stub.Unary(S(value="wait:dl"), timeout=0.3)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(rig.servicer.state.event(rig.servicer.state.cancelled, "dl").wait(), 5)


async def test_caller_cancel_cancels_the_servicer(rig: Rig):
    state = rig.servicer.state
    call = rig.tunnel_stub.Unary(S(value="wait:c1"), timeout=10)
    await asyncio.wait_for(state.event(state.entered, "c1").wait(), 5)
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await call.code() is grpc.StatusCode.CANCELLED
    await asyncio.wait_for(state.event(state.cancelled, "c1").wait(), 5)
    await asyncio.wait_for(rig.edge_session.wait_quiet(), 5)
    assert rig.edge_session.active_streams == 0
    assert rig.cloud_session.active_streams == 0


async def test_cancelling_the_awaiting_task_cancels_the_call(rig: Rig):
    state = rig.servicer.state
    task = asyncio.ensure_future(rig.tunnel_stub.Unary(S(value="wait:c2"), timeout=10))
    await asyncio.wait_for(state.event(state.entered, "c2").wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(state.event(state.cancelled, "c2").wait(), 5)


async def test_server_ending_early_ends_the_callers_stream(rig: Rig):
    call = rig.tunnel_stub.Bidi(timeout=5)
    await call.write(S(value="stop"))
    assert await call.code() is grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.write(S(value="late"))
    assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE


async def test_generated_stub_and_servicer_work_on_both(rig: Rig):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    health = HealthServicer()
    await health.set("hplus.test.Echo", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, rig.tunnel_server)
    assert "grpc.health.v1.Health" in rig.tunnel_server.services
    stub = health_pb2_grpc.HealthStub(rig.gateway.channel("h-1"))
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="hplus.test.Echo"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="hplus.test.Echo"), timeout=5)
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_hooks_see_trace_metadata_and_can_refuse():
    events = []

    class CloudHook(mesh.tunnel.CallHook):
        def on_start(self, call):
            call.metadata.append(("x-added", "by-hook"))
            call.trace = mesh.tunnel._hooks.tunnel_pb2.TraceContext(
                traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )

        def on_end(self, call, code, details):
            events.append(("cloud", call.method, code))

    class EdgeHook(mesh.tunnel.CallHook):
        def on_start(self, call):
            events.append(("edge-trace", call.trace.traceparent if call.trace else None))
            if call.metadata and ("x-deny", "1") in call.metadata:
                raise mesh.tunnel.HookRejection(grpc.StatusCode.PERMISSION_DENIED, "denied by hook")

        def on_end(self, call, code, details):
            events.append(("edge", call.method, code))

    async with running_rig() as rig:
        rig.tunnel_server._hooks = (EdgeHook(),)
        channel = mesh.tunnel.TunnelChannel(lambda: rig.gateway.pick("h-1"), hooks=[CloudHook()])
        stub = EchoStub(channel)
        assert (await stub.Unary(S(value="t"), timeout=5)).value == "echo:t"
        assert ("x-added", "by-hook") in rig.servicer.state.metadata[-1]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(S(value="t"), metadata=(("x-deny", "1"),), timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert ("edge-trace", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") in events
    assert ("cloud", "/hplus.test.Echo/Unary", grpc.StatusCode.OK) in events
    assert ("edge", "/hplus.test.Echo/Unary", grpc.StatusCode.OK) in events
    assert ("cloud", "/hplus.test.Echo/Unary", grpc.StatusCode.PERMISSION_DENIED) in events


async def test_servicer_using_context_read_write_and_done_callbacks(rig: Rig):
    for stub in (rig.direct_stub, rig.tunnel_stub):
        rig.servicer.state.entered.pop("done", None)

        async def requests():
            yield S(value="abc")
            yield S(value="xyz")

        call = stub.ReadWrite(requests(), timeout=5)
        assert [m.value async for m in call] == ["cba", "zyx"]
        assert ("x-cancelled", "False") in tuple(await call.trailing_metadata())
        await asyncio.wait_for(
            rig.servicer.state.event(rig.servicer.state.entered, "done").wait(), 5
        )
    assert rig.servicer.state.metadata[-1][0][1].startswith("tunnel:h-1/")


async def test_concurrent_waiters_on_one_call(rig: Rig):
    call = rig.tunnel_stub.Unary(S(value="metadata"), timeout=5)
    first, second, reply = await asyncio.gather(
        call.initial_metadata(), call.initial_metadata(), call
    )
    assert tuple(first) == tuple(second)
    assert ("x-initial", "1") in tuple(first)
    assert reply.value == "metadata"
