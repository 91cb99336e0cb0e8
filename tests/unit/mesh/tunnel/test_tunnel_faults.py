"""Flow control, mass cancellation, limits, refusals and drains over a real tunnel."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from hplus.tunnel.v1 import tunnel_pb2_grpc
from mesh.tunnel import (
    EdgeIdentity,
    EdgeTunnel,
    TunnelConfig,
    TunnelGateway,
    TunnelRefused,
    TunnelServer,
)
from tests.unit.mesh.tunnel.tunnel_harness import HOSPITAL, I32, S, authenticate, running_rig


async def test_a_consumer_that_never_reads_stalls_only_its_own_stream():
    async with running_rig() as rig:
        stub = rig.tunnel_stub
        stuck = stub.ServerStream(I32(value=64), timeout=30)  # 1 MiB, window is 256 KiB
        first = await stuck.read()  # the stuck stream is open and has data
        assert len(first.value) == 16 * 1024

        async def drain_one():
            call = stub.ServerStream(I32(value=64), timeout=30)
            count = 0
            async for _ in call:
                count += 1
            return count

        counts = await asyncio.wait_for(asyncio.gather(*(drain_one() for _ in range(49))), 25)
        assert counts == [64] * 49
        edge = rig.edge_session
        assert edge.active_streams == 1  # the stuck stream's servicer waits for credit
        assert not stuck.done()
        stuck.cancel()
        await asyncio.wait_for(edge.wait_quiet(), 5)
        assert edge.active_streams == 0


async def test_ten_thousand_calls_cancelled_at_random_points_leave_nothing_behind():
    rng = random.Random(20261128)
    # Thousands of calls opened and cancelled at once is what the rapid-reset flood looks
    # like; this test is about what such calls leave behind, so it lifts the flood budget.
    config = TunnelConfig(max_control_frames_per_second=100_000)
    async with running_rig(edge_config=config) as rig:
        stub = rig.tunnel_stub
        baseline = asyncio.all_tasks()

        async def one(index: int) -> None:
            kind = rng.randrange(4)
            spins = rng.randrange(6)
            if kind == 0:
                call = stub.Unary(S(value=f"n{index}"), timeout=30)
            elif kind == 1:
                call = stub.ServerStream(I32(value=-rng.randrange(1, 50)), timeout=30)
            elif kind == 2:
                call = stub.ClientStream(timeout=30)
            else:
                call = stub.Bidi(timeout=30)
            for _ in range(spins):
                await asyncio.sleep(0)  # a random point in the call's life, not a wait
            if kind == 1 and spins >= 3:
                await call.read()  # cancel mid-stream, after some data arrived
            if kind == 2 and spins % 2:
                await call.write(S(value="x"))
            if kind == 3 and spins % 2:
                await call.write(S(value="x"))
                if spins >= 3:
                    assert (await call.read()).value == "X"
            call.cancel()
            assert call.done()

        for start in range(0, 10_000, 500):
            await asyncio.gather(*(one(i) for i in range(start, start + 500)))
        # One more call: the edge applied every cancel before it (frames stay in order).
        assert (await stub.Unary(S(value="last"), timeout=10)).value == "echo:last"
        await asyncio.wait_for(rig.edge_session.wait_quiet(), 10)
        await asyncio.wait_for(rig.cloud_session.wait_quiet(), 10)
        assert rig.edge_session.active_streams == 0
        assert rig.edge_session.task_count == 0
        assert rig.cloud_session.active_streams == 0
        assert rig.cloud_session.task_count == 0
        leftover = asyncio.all_tasks() - baseline
        assert not leftover, [t.get_name() for t in leftover]
        # Calls beyond the edge's max_concurrent_streams waited at the cloud; those cancelled
        # while waiting never reached the edge. Every open the cloud sent did.
        assert rig.edge_session.calls_started == rig.cloud_session.opens_sent
        assert rig.cloud_session.opens_sent > 1_000


async def test_request_larger_than_the_edge_limit_is_resource_exhausted():
    config = TunnelConfig(max_message_bytes=100_000)
    async with running_rig(edge_config=config) as rig:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.tunnel_stub.Unary(S(value="x" * 200_000), timeout=5)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        call = rig.tunnel_stub.ClientStream(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(S(value="y" * 200_000))
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await rig.tunnel_stub.Unary(S(value="ok"), timeout=5)).value == "echo:ok"


async def test_response_larger_than_the_cloud_limit_is_resource_exhausted():
    config = TunnelConfig(max_message_bytes=100_000)
    async with running_rig(cloud_config=config) as rig:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.tunnel_stub.Unary(S(value="big:200000"), timeout=5)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len((await rig.tunnel_stub.Unary(S(value="big:90000"), timeout=5)).value) == 90000


@pytest.mark.parametrize(
    ("edge_revs", "cloud_revs", "expected"),
    [((1,), (1, 2), 1), ((1, 2), (1,), 1), ((1, 2), (1, 2), 2)],
)
async def test_older_revision_peer(edge_revs, cloud_revs, expected):
    async with running_rig(
        edge_config=TunnelConfig(revisions=edge_revs),
        cloud_config=TunnelConfig(revisions=cloud_revs),
    ) as rig:
        assert rig.edge_session.revision == rig.cloud_session.revision == expected
        assert (await rig.tunnel_stub.Unary(S(value="r"), timeout=5)).value == "echo:r"
        call = rig.tunnel_stub.ServerStream(I32(value=20), timeout=5)
        assert len([m async for m in call]) == 20
        assert (await rig.tunnel_stub.Unary(S(value="metadata"), timeout=5)).value == "metadata"


async def _refusal(*, credential: str, hospital: str, revisions=(1, 2)) -> TunnelRefused:
    gateway = TunnelGateway(authenticate=authenticate)
    cloud = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, cloud)
    port = cloud.add_insecure_port("127.0.0.1:0")
    await cloud.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        edge = EdgeTunnel(
            channel,
            TunnelServer(),
            credential=credential,
            identity=EdgeIdentity(hospital_id=hospital, edge_id="e"),
            config=TunnelConfig(revisions=revisions),
        )
        with pytest.raises(TunnelRefused) as refused:
            await asyncio.wait_for(edge.run(), 10)
        assert gateway.pick(HOSPITAL) is None
        assert not edge.session.ready.is_set()
        return refused.value
    finally:
        await channel.close()
        await cloud.stop(None)


async def test_bad_or_missing_credential_is_unauthenticated():
    refused = await _refusal(credential="wrong", hospital=HOSPITAL)
    assert refused.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_other_hospital_is_permission_denied():
    refused = await _refusal(credential="secret-h-1", hospital="h-2")
    assert refused.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


async def test_unsupported_revision_is_refused_unavailable():
    refused = await _refusal(credential="secret-h-1", hospital=HOSPITAL, revisions=(7,))
    assert refused.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "unsupported revision" in refused.status.message


async def test_edge_drain_finishes_calls_in_flight_and_refuses_new_ones():
    async with running_rig() as rig:
        state = rig.servicer.state
        slow = rig.tunnel_stub.ServerStream(I32(value=64), timeout=10)
        assert len((await slow.read()).value) == 16 * 1024
        drain = asyncio.ensure_future(rig.edge.shutdown(30.0))
        await asyncio.wait_for(rig.cloud_session.drain_requested.wait(), 5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.tunnel_stub.Unary(S(value="new"), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        rest = [m async for m in slow]
        assert len(rest) == 63
        await asyncio.wait_for(drain, 10)
        assert rig.edge.task is not None
        status = await rig.edge.task
        assert status.code == 0
        assert state.cancelled == {}


async def test_gateway_drain_and_ping_rtt():
    async with running_rig() as rig:
        cloud = rig.cloud_session
        cloud.ping()
        assert (await rig.tunnel_stub.Unary(S(value="p"), timeout=5)).value == "echo:p"
        assert cloud.rtt is not None
        assert 0 < cloud.rtt < 5
        await rig.gateway.shutdown(2.0)
        assert rig.edge.task is not None
        status = await asyncio.wait_for(rig.edge.task, 5)
        assert status.code == 0
        assert rig.edge_session.drain_requested.is_set()


async def test_large_unary_request_and_response_are_chunked():
    async with running_rig() as rig:
        text = "z" * 1_500_000
        reply = await rig.tunnel_stub.Unary(S(value=text), timeout=10)
        assert reply.value == "echo:" + text


async def test_edge_killed_mid_call_fails_the_call_and_a_new_tunnel_serves():
    async with running_rig() as rig:
        state = rig.servicer.state
        call = rig.tunnel_stub.Unary(S(value="wait:k"), timeout=30)
        await asyncio.wait_for(state.event(state.entered, "k").wait(), 5)
        rig.edge._transport.cancel()  # the edge vanishes: its outer stream is reset
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call, 5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(state.event(state.cancelled, "k").wait(), 5)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{rig.cloud_port}")
        try:
            again = EdgeTunnel(
                channel,
                rig.tunnel_server,
                credential="secret-h-1",
                identity=EdgeIdentity(hospital_id=HOSPITAL, edge_id="edge-a"),
            )
            async with again:
                await asyncio.wait_for(again.wait_ready(), 5)
                await asyncio.wait_for(rig.gateway.wait_for_hospital(HOSPITAL), 5)
                reply = await rig.tunnel_stub.Unary(S(value="back"), timeout=5)
                assert reply.value == "echo:back"
        finally:
            await channel.close()
