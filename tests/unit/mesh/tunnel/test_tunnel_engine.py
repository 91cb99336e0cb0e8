"""The session engine on the in-memory transport: coalescing, revisions, fuzzing."""

from __future__ import annotations

import asyncio
import contextlib
import random

import grpc
import pytest

from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.tunnel import (
    EdgeIdentity,
    EdgeTunnel,
    Role,
    Session,
    TunnelChannel,
    TunnelConfig,
    TunnelRefused,
    TunnelServer,
    memory_transport_pair,
)
from tests.unit.mesh.tunnel.tunnel_harness import (
    I32,
    EchoServicer,
    EchoStub,
    S,
    authenticate,
    running_rig,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@contextlib.asynccontextmanager
async def memory_pair(edge_config=None, cloud_config=None):
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end,
        role=Role.EDGE,
        config=edge_config,
        hello=tunnel_pb2.Hello(hospital_id="h", edge_id="e"),
        on_open=server.on_open,
    )
    cloud = Session(cloud_end, role=Role.CLOUD, config=cloud_config)
    edge_task = asyncio.ensure_future(edge.run())
    cloud_task = asyncio.ensure_future(cloud.run())
    await asyncio.wait_for(asyncio.gather(edge.ready.wait(), cloud.ready.wait()), 5)
    try:
        yield edge, cloud, edge_end, cloud_end
    finally:
        await cloud.drain(1.0)
        await asyncio.wait_for(asyncio.gather(edge_task, cloud_task), 5)


async def test_small_unary_call_costs_one_outer_message_each_way():
    async with memory_pair() as (_, cloud, edge_end, cloud_end):
        stub = EchoStub(TunnelChannel(cloud))
        assert (await stub.Unary(S(value="warm"), timeout=5)).value == "echo:warm"
        before = (edge_end.sent_messages, cloud_end.sent_messages)
        assert (await stub.Unary(S(value="one"), timeout=5)).value == "echo:one"
        assert (edge_end.sent_messages, cloud_end.sent_messages) == (before[0] + 1, before[1] + 1)
        before = (edge_end.sent_messages, cloud_end.sent_messages)
        replies = await asyncio.gather(*(stub.Unary(S(value=str(i)), timeout=5) for i in range(64)))
        assert [r.value for r in replies] == [f"echo:{i}" for i in range(64)]
        assert cloud_end.sent_messages - before[1] <= 4  # 64 opens coalesced
        assert edge_end.sent_messages - before[0] <= 64


async def test_revision_one_sends_one_frame_per_outer_message():
    sizes: list[int] = []
    async with memory_pair(edge_config=TunnelConfig(revisions=(1,))) as (edge, cloud, edge_end, _):
        assert edge.revision == cloud.revision == 1
        original = edge_end.send

        async def recording_send(frames):
            sizes.append(len(frames))
            await original(frames)

        edge_end.send = recording_send  # type: ignore[method-assign]
        stub = EchoStub(TunnelChannel(cloud))
        replies = await asyncio.gather(*(stub.Unary(S(value=str(i)), timeout=5) for i in range(20)))
        assert len(replies) == 20
        call = stub.ServerStream(I32(value=-5), timeout=5)
        assert len([m async for m in call]) == 5
    assert sizes
    assert set(sizes) == {1}


METHODS = ["/hplus.test.Echo/Unary", "/hplus.test.Echo/ServerStream", "/hplus.test.Echo/Bidi",
           "/hplus.test.Echo/ClientStream", "/hplus.test.Echo/Nope"]  # fmt: skip


def plausible_frame(rng: random.Random, ids: list[int], caller: bool) -> tunnel_pb2.Frame:
    """A frame a correct peer might send (with random payloads), to get past the first frame."""
    choice = rng.randrange(6)
    if caller and (choice == 0 or not ids):
        ids.append(ids[-1] + 2 if ids else 1)
        request = rng.choice([S(value="hi"), I32(value=-3), S(value="wait:f")]).SerializeToString()
        if rng.random() < 0.2:
            request = rng.randbytes(8)
        chunk = tunnel_pb2.MessageChunk(message_size=len(request), data=request)
        return tunnel_pb2.Frame(
            stream_id=ids[-1],
            open=tunnel_pb2.OpenStream(
                method=rng.choice(METHODS), message=chunk, half_close=rng.random() < 0.5
            ),
        )
    if choice == 1:
        return tunnel_pb2.Frame(stream_id=0, ping=tunnel_pb2.Ping(id=rng.randrange(9)))
    stream_id = rng.choice(ids) if ids else 1
    if choice == 2:
        return tunnel_pb2.Frame(
            stream_id=stream_id,
            window_update=tunnel_pb2.WindowUpdate(increment=rng.randrange(1, 9999)),
        )
    if choice == 3:
        data = S(value="x").SerializeToString()
        if caller:
            return tunnel_pb2.Frame(
                stream_id=stream_id,
                message=tunnel_pb2.MessageChunk(message_size=len(data), data=data),
            )
        return tunnel_pb2.Frame(stream_id=stream_id, headers=tunnel_pb2.ResponseHeaders())
    if choice == 4:
        if caller:
            return tunnel_pb2.Frame(stream_id=stream_id, cancel=tunnel_pb2.Cancel(reason="fuzz"))
        data = S(value="r").SerializeToString()
        return tunnel_pb2.Frame(
            stream_id=stream_id, message=tunnel_pb2.MessageChunk(message_size=len(data), data=data)
        )
    if caller:
        return tunnel_pb2.Frame(stream_id=stream_id, half_close=tunnel_pb2.HalfClose())
    close = tunnel_pb2.CloseStream(
        status=tunnel_pb2.google_dot_rpc_dot_status__pb2.Status(code=rng.randrange(17))
    )
    return tunnel_pb2.Frame(stream_id=stream_id, close=close)


def random_frame(rng: random.Random, open_ids: list[int]) -> tunnel_pb2.Frame:
    stream_id = rng.choice([0, 0, 1, 2, 3, rng.randrange(1, 50), *open_ids])
    kind = rng.randrange(13)
    data = rng.randbytes(rng.randrange(0, 40))
    frame = tunnel_pb2.Frame(stream_id=stream_id)
    if kind == 0:
        frame.hello.revisions.extend([rng.randrange(0, 4)])
    elif kind == 1:
        frame.welcome.revision = rng.randrange(0, 4)
    elif kind == 2:
        frame.open.method = rng.choice(["/hplus.test.Echo/Unary", "/x/y", "bad", ""])
        if rng.random() < 0.5:
            frame.open.message.message_size = len(data) + rng.choice([0, 0, 1, -1 if data else 0])
            frame.open.message.data = data
        frame.open.half_close = rng.random() < 0.5
    elif kind == 3:
        frame.message.message_size = rng.choice([len(data), len(data) + 5, 10**9])
        frame.message.data = data
    elif kind == 4:
        frame.half_close.SetInParent()
    elif kind == 5:
        frame.cancel.reason = "fuzz"
    elif kind == 6:
        frame.headers.metadata.add(key="k", value=data)
    elif kind == 7:
        frame.close.status.code = rng.randrange(0, 17)
        if rng.random() < 0.5:
            frame.close.message.message_size = len(data)
            frame.close.message.data = data
    elif kind == 8:
        frame.window_update.increment = rng.randrange(0, 2**20)
    elif kind == 9:
        frame.ping.id = rng.randrange(100)
    elif kind == 10:
        frame.pong.id = rng.randrange(100)
    elif kind == 11:
        frame.go_away.status.code = rng.choice([0, 3, 14])
    # kind 12: no kind at all
    return frame


async def fuzz_cloud(seed: int) -> None:
    """A fake edge sends random frames to a real cloud session making real calls."""
    rng = random.Random(seed)
    edge_end, cloud_end = memory_transport_pair()
    cloud = Session(cloud_end, role=Role.CLOUD)
    baseline = asyncio.all_tasks()
    run = asyncio.ensure_future(cloud.run())
    if rng.random() < 0.9:
        await edge_end.send(
            [
                tunnel_pb2.Frame(
                    hello=tunnel_pb2.Hello(
                        revisions=[2], initial_window_bytes=65536, max_message_bytes=10**6
                    )
                )
            ]
        )
        assert (await edge_end.recv())[0].HasField("welcome")
    stub = EchoStub(TunnelChannel(cloud))
    calls = []
    if cloud.ready.is_set():
        calls = [
            stub.Unary(S(value="a"), timeout=5),
            stub.ServerStream(I32(value=-3), timeout=5),
            stub.Bidi(timeout=5),
        ]
    ids = [1, 3, 5]
    for _ in range(rng.randrange(1, 40)):
        await edge_end.send(
            [
                plausible_frame(rng, ids, False) if rng.random() < 0.93 else random_frame(rng, ids)
                for _ in range(rng.randrange(1, 4))
            ]
        )
    await edge_end.close()
    status = await asyncio.wait_for(run, 5)
    for call in calls:
        assert call.done()
        code = await call.code()
        assert code is not grpc.StatusCode.INTERNAL
    await check_clean(cloud, status, edge_end, baseline, run)


async def fuzz_edge(seed: int) -> None:
    """A fake cloud sends random frames to a real edge session serving the echo service."""
    rng = random.Random(seed)
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end, role=Role.EDGE, hello=tunnel_pb2.Hello(hospital_id="h"), on_open=server.on_open
    )
    baseline = asyncio.all_tasks()
    run = asyncio.ensure_future(edge.run())
    hello = (await cloud_end.recv())[0]
    assert hello.HasField("hello")
    if rng.random() < 0.9:
        await cloud_end.send(
            [
                tunnel_pb2.Frame(
                    welcome=tunnel_pb2.Welcome(
                        revision=2, initial_window_bytes=65536, max_message_bytes=10**6
                    )
                )
            ]
        )
    ids: list[int] = []
    for _ in range(rng.randrange(1, 40)):
        await cloud_end.send(
            [
                plausible_frame(rng, ids, True) if rng.random() < 0.93 else random_frame(rng, ids)
                for _ in range(rng.randrange(1, 4))
            ]
        )
    await cloud_end.close()
    status = await asyncio.wait_for(run, 5)
    await check_clean(edge, status, cloud_end, baseline, run)


async def check_clean(session, status, peer_end, baseline, run) -> None:
    assert status.code in (
        0,
        INVALID,
        grpc.StatusCode.UNAVAILABLE.value[0],
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
    )
    sent = []
    while not peer_end._inbox.empty():
        batch = peer_end._inbox.get_nowait()
        if batch:
            sent.extend(batch)
    if status.code == INVALID:
        assert status.message.startswith("protocol violation: ")
        go_aways = [f.go_away for f in sent if f.HasField("go_away")]
        assert go_aways
        assert go_aways[-1].status.code == INVALID
    assert session.active_streams == 0
    assert session.task_count == 0
    leftover = asyncio.all_tasks() - baseline - {run}
    assert not leftover, [t.get_name() for t in leftover]


@pytest.mark.parametrize("seed", range(60))
async def test_fuzz_from_the_edge_side(seed):
    await fuzz_cloud(seed)


@pytest.mark.parametrize("seed", range(60))
async def test_fuzz_from_the_cloud_side(seed):
    await fuzz_edge(seed)


def welcome() -> tunnel_pb2.Frame:
    return tunnel_pb2.Frame(
        welcome=tunnel_pb2.Welcome(revision=2, initial_window_bytes=4096, max_message_bytes=4096)
    )


def opening(stream_id, method, message=None, half_close=False) -> tunnel_pb2.Frame:
    frame = tunnel_pb2.Frame(stream_id=stream_id)
    frame.open.method = f"/hplus.test.Echo/{method}"
    frame.open.half_close = half_close
    if message is not None:
        frame.open.message.CopyFrom(message)
    return frame


async def test_violations_end_the_tunnel_with_invalid_argument():
    cases = [
        tunnel_pb2.Frame(stream_id=0),  # no kind
        tunnel_pb2.Frame(stream_id=0, window_update=tunnel_pb2.WindowUpdate(increment=1)),
        tunnel_pb2.Frame(stream_id=2, open=tunnel_pb2.OpenStream(method="/a/b")),
        tunnel_pb2.Frame(stream_id=9, message=tunnel_pb2.MessageChunk(message_size=1, data=b"x")),
        tunnel_pb2.Frame(stream_id=1, ping=tunnel_pb2.Ping(id=1)),
    ]
    for frame in cases:
        edge_end, cloud_end = memory_transport_pair()
        server = TunnelServer()
        edge = Session(
            edge_end,
            role=Role.EDGE,
            hello=tunnel_pb2.Hello(hospital_id="h"),
            on_open=server.on_open,
        )
        run = asyncio.ensure_future(edge.run())
        await cloud_end.recv()
        await cloud_end.send(
            [
                tunnel_pb2.Frame(
                    welcome=tunnel_pb2.Welcome(
                        revision=2, initial_window_bytes=4096, max_message_bytes=4096
                    )
                ),
                frame,
            ]
        )
        status = await asyncio.wait_for(run, 5)
        assert status.code == INVALID, frame
    # A chunk beyond the credit is a violation too; before the handshake likewise.
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end,
        role=Role.EDGE,
        config=TunnelConfig(initial_window_bytes=1024),
        hello=tunnel_pb2.Hello(hospital_id="h"),
        on_open=server.on_open,
    )
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    await cloud_end.send(
        [
            welcome(),
            opening(1, "ClientStream"),
            tunnel_pb2.Frame(
                stream_id=1, message=tunnel_pb2.MessageChunk(message_size=2000, data=b"x" * 2000)
            ),
        ]
    )
    status = await asyncio.wait_for(run, 5)
    assert status.code == INVALID
    assert "credit" in status.message
    edge_end, cloud_end = memory_transport_pair()
    cloud = Session(cloud_end, role=Role.CLOUD)
    run = asyncio.ensure_future(cloud.run())
    await edge_end.send([tunnel_pb2.Frame(stream_id=1, open=tunnel_pb2.OpenStream(method="/a/b"))])
    status = await asyncio.wait_for(run, 5)
    assert status.code == INVALID


async def test_oversized_message_from_peer_ends_only_that_stream():
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end,
        role=Role.EDGE,
        config=TunnelConfig(max_message_bytes=1000),
        hello=tunnel_pb2.Hello(hospital_id="h"),
        on_open=server.on_open,
    )
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    request = S(value="hi").SerializeToString()
    await cloud_end.send(
        [
            welcome(),
            opening(1, "Unary", tunnel_pb2.MessageChunk(message_size=5000, data=b"x" * 100)),
            opening(
                3, "Unary", tunnel_pb2.MessageChunk(message_size=len(request), data=request), True
            ),
            tunnel_pb2.Frame(stream_id=1, message=tunnel_pb2.MessageChunk(data=b"y" * 100)),
        ]
    )
    closes = {}
    while len(closes) < 2:
        for frame in await asyncio.wait_for(cloud_end.recv(), 5):
            if frame.HasField("close"):
                closes[frame.stream_id] = frame.close
    assert closes[1].status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert closes[3].status.code == 0
    assert S.FromString(closes[3].message.data).value == "echo:hi"
    await cloud_end.close()
    status = await asyncio.wait_for(run, 5)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]


async def read_until_error(call, replies=None):
    while True:
        reply = await asyncio.wait_for(call.read(), 5)
        if replies is not None:
            replies.append(reply)


async def test_garbage_over_real_grpc_ends_the_outer_call_and_the_gateway_survives():
    async with running_rig() as rig:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{rig.cloud_port}")
        try:
            md = (("authorization", "Bearer secret-h-1"),)
            raw = channel.stream_stream(
                "/hplus.tunnel.v1.TunnelService/Connect",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            call = raw(metadata=md)
            await call.write(b"\xff\xff\xff\xff garbage")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await read_until_error(call)
            # Undecodable bytes are the edge's fault: INVALID_ARGUMENT, not UNAVAILABLE.
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "does not decode" in (err.value.details() or "")
            stub = tunnel_pb2_grpc.TunnelServiceStub(channel)
            call = stub.Connect(metadata=md)
            await call.write(
                tunnel_pb2.ConnectRequest(
                    frames=[tunnel_pb2.Frame(stream_id=5, ping=tunnel_pb2.Ping())]
                )
            )
            replies: list = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await read_until_error(call, replies)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert replies[-1].frames[0].go_away.status.code == INVALID
            assert "protocol violation" in (err.value.details() or "")
        finally:
            await channel.close()
        assert len(rig.gateway.sessions("h-1")) == 1
        assert (await rig.tunnel_stub.Unary(S(value="still"), timeout=5)).value == "echo:still"
    assert authenticate([("authorization", "Bearer nope")]) is None


async def test_garbage_from_a_gateway_is_a_protocol_violation_at_the_edge():
    async def connect(requests, context):
        await context.read()  # the hello
        await context.write(b"\x0a\xff\xff\xff\xff garbage")
        await asyncio.Event().wait()

    gateway = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    gateway.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "hplus.tunnel.v1.TunnelService",
                {"Connect": grpc.stream_stream_rpc_method_handler(connect)},
            )
        ]
    )
    port = gateway.add_insecure_port("127.0.0.1:0")
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        edge = EdgeTunnel(
            channel,
            TunnelServer(),
            credential="c",
            identity=EdgeIdentity(hospital_id="h", edge_id="e"),
        )
        with pytest.raises(TunnelRefused) as refused:
            await asyncio.wait_for(edge.run(), 10)
        assert refused.value.status.code == INVALID
        assert "does not decode" in refused.value.status.message
    finally:
        await channel.close()
        await gateway.stop(None)


async def test_silent_peer_is_declared_dead_after_three_intervals():
    edge_end, cloud_end = memory_transport_pair()
    cloud = Session(cloud_end, role=Role.CLOUD, config=TunnelConfig(ping_interval=0.05))
    run = asyncio.ensure_future(cloud.run())
    hello = tunnel_pb2.Hello(revisions=[2], initial_window_bytes=4096, max_message_bytes=4096)
    await edge_end.send([tunnel_pb2.Frame(hello=hello)])
    welcome = (await edge_end.recv())[0].welcome
    assert welcome.ping_interval.ToNanoseconds() == 50_000_000
    call = EchoStub(TunnelChannel(cloud)).Unary(S(value="x"), timeout=30)
    status = await asyncio.wait_for(run, 5)  # the fake edge never answers
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "silent" in status.message
    assert await call.code() is grpc.StatusCode.UNAVAILABLE


async def test_edge_pings_and_gives_up_on_a_silent_cloud():
    edge_end, cloud_end = memory_transport_pair()
    edge = Session(edge_end, role=Role.EDGE, hello=tunnel_pb2.Hello(hospital_id="h"))
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    welcome = tunnel_pb2.Welcome(revision=2, initial_window_bytes=4096, max_message_bytes=4096)
    welcome.ping_interval.FromNanoseconds(50_000_000)
    await cloud_end.send([tunnel_pb2.Frame(welcome=welcome)])
    first = (await asyncio.wait_for(cloud_end.recv(), 5))[0]
    assert first.HasField("ping")
    status = await asyncio.wait_for(run, 5)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_capabilities_are_negotiated_and_hello_reaches_the_cloud():
    async with memory_pair(
        edge_config=TunnelConfig(capabilities=("trace-lookup", "future-thing")),
        cloud_config=TunnelConfig(capabilities=("trace-lookup", "cloud-only")),
    ) as (edge, cloud, _, _):
        assert list(edge.welcome.capabilities) == ["trace-lookup"]
        assert list(cloud.hello.capabilities) == ["trace-lookup", "future-thing"]
        assert cloud.hello.hospital_id == "h"
        assert list(cloud.hello.revisions) == [1, 2]
        assert edge.revision == cloud.revision == 2


async def test_no_tunnel_fails_fast_with_unavailable():
    stub = EchoStub(TunnelChannel(lambda: None))
    call = stub.Unary(S(value="x"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert call.done()
    assert call.time_remaining() is not None


async def test_gateway_drain_lets_calls_in_flight_finish():
    async with running_rig() as rig:
        call = rig.tunnel_stub.ServerStream(I32(value=64), timeout=10)
        assert len((await call.read()).value) == 16 * 1024
        shutdown = asyncio.ensure_future(rig.gateway.shutdown(30.0))
        await asyncio.wait_for(rig.edge.drain_requested.wait(), 5)
        rest = [m async for m in call]
        assert len(rest) == 63
        await asyncio.wait_for(shutdown, 5)
        assert rig.edge.task is not None
        assert (await asyncio.wait_for(rig.edge.task, 5)).code == 0
