"""The engine's bounds against a misbehaving peer, one role faked frame by frame.

Each test puts a real `Session` (edge or cloud) on one end of an in-memory transport and
scripts the other end; the real-process versions of these attacks are in
``tests/integration/hostile``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel import (
    Role,
    Session,
    TunnelChannel,
    TunnelConfig,
    TunnelServer,
    memory_transport_pair,
)
from mesh.tunnel._transport import MemoryTransport
from tests.unit.mesh.tunnel.tunnel_harness import I32, EchoServicer, EchoStub, S, running_rig

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
Frame = tunnel_pb2.Frame


def hello(**fields: object) -> Frame:
    values: dict[str, object] = {
        "revisions": [2],
        "hospital_id": "h",
        "edge_id": "e",
        "initial_window_bytes": 65536,
        "max_message_bytes": 4 * 1024 * 1024,
    }
    values.update(fields)
    return Frame(hello=tunnel_pb2.Hello(**values))  # type: ignore[arg-type]


def welcome(**fields: object) -> Frame:
    values: dict[str, object] = {
        "revision": 2,
        "initial_window_bytes": 65536,
        "max_message_bytes": 4 * 1024 * 1024,
    }
    values.update(fields)
    return Frame(welcome=tunnel_pb2.Welcome(**values))  # type: ignore[arg-type]


def chunk(stream_id: int, data: bytes, size: int | None = None) -> Frame:
    return Frame(
        stream_id=stream_id,
        message=tunnel_pb2.MessageChunk(message_size=size or 0, data=data),
    )


def opening(stream_id: int, method: str = "Unary", **fields: object) -> Frame:
    frame = Frame(stream_id=stream_id)
    frame.open.method = f"/hplus.test.Echo/{method}"
    for key, value in fields.items():
        if isinstance(value, tunnel_pb2.MessageChunk):
            frame.open.message.CopyFrom(value)
        else:
            setattr(frame.open, key, value)
    return frame


async def frames_until(end: MemoryTransport, predicate, limit: float = 5.0) -> list[Frame]:
    """Reads outer messages from ``end`` until a frame satisfies ``predicate``."""
    seen: list[Frame] = []
    async with asyncio.timeout(limit):
        while True:
            batch = await end.recv()
            if batch is None:
                raise AssertionError(f"peer closed; saw {[f.WhichOneof('kind') for f in seen]}")
            seen.extend(batch)
            if any(predicate(f) for f in batch):
                return seen


@contextlib.asynccontextmanager
async def real_edge(
    config: TunnelConfig | None = None, first: Sequence[Frame] = ()
) -> AsyncIterator[tuple[Session, MemoryTransport, asyncio.Future[object]]]:
    """A real edge session serving the echo service; the test is its cloud."""
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end,
        role=Role.EDGE,
        config=config,
        hello=tunnel_pb2.Hello(hospital_id="h", edge_id="e"),
        on_open=server.on_open,
    )
    run = asyncio.ensure_future(edge.run())
    sent_hello = (await cloud_end.recv())[0]
    assert sent_hello.HasField("hello")
    await cloud_end.send([welcome(), *first])
    await asyncio.wait_for(edge.ready.wait(), 5)
    try:
        yield edge, cloud_end, run
    finally:
        await cloud_end.close()
        await asyncio.wait_for(run, 5)


@contextlib.asynccontextmanager
async def real_cloud(
    config: TunnelConfig | None = None, **hello_fields: object
) -> AsyncIterator[tuple[Session, MemoryTransport, asyncio.Future[object]]]:
    """A real cloud session; the test is its edge."""
    edge_end, cloud_end = memory_transport_pair()
    cloud = Session(cloud_end, role=Role.CLOUD, config=config)
    run = asyncio.ensure_future(cloud.run())
    await edge_end.send([hello(**hello_fields)])
    assert (await edge_end.recv())[0].HasField("welcome")
    await asyncio.wait_for(cloud.ready.wait(), 5)
    try:
        yield cloud, edge_end, run
    finally:
        await edge_end.close()
        await asyncio.wait_for(run, 5)


# -- item 1: floods, queues, yielding ----------------------------------------------------


@pytest.mark.parametrize("role", ["edge", "cloud"])
async def test_a_ping_flood_ends_the_tunnel_with_resource_exhausted(role):
    pings = [Frame(ping=tunnel_pb2.Ping(id=i)) for i in range(5000)]
    # The budget is per second of our own processing: a budget well below what even a
    # loaded machine processes keeps the test about the limit, not about machine speed.
    config = TunnelConfig(max_control_frames_per_second=100)
    context = real_edge(config) if role == "edge" else real_cloud(config)
    async with context as (_session, peer, run):
        await peer.send(pings)
        status = await asyncio.wait_for(asyncio.shield(run), 5)
        assert status.code == EXHAUSTED
        assert "flood" in status.message
        sent = await frames_until(peer, lambda f: f.HasField("go_away"))
        assert sent[-1].go_away.status.code == EXHAUSTED
        # Pongs were answered only up to the budget, never one per ping of the flood.
        assert sum(f.HasField("pong") for f in sent) <= 101


@pytest.mark.parametrize(
    "frame",
    [
        Frame(stream_id=1, window_update=tunnel_pb2.WindowUpdate(increment=0)),
        Frame(stream_id=0, pong=tunnel_pb2.Pong(id=7)),
    ],
    ids=["zero-window-update", "unsolicited-pong"],
)
async def test_frames_that_carry_nothing_are_a_flood(frame):
    async with real_edge() as (_edge, cloud, run):
        opener = opening(1, "ClientStream")
        await cloud.send([opener, *([frame] * 3000)])
        status = await asyncio.wait_for(asyncio.shield(run), 5)
    assert status.code == EXHAUSTED


async def test_empty_continuation_chunks_are_a_flood():
    async with real_edge() as (_edge, cloud, run):
        await cloud.send([opening(1, "ClientStream"), chunk(1, b"x", size=10)])
        await cloud.send([chunk(1, b"")] * 3000)
        status = await asyncio.wait_for(asyncio.shield(run), 5)
    assert status.code == EXHAUSTED


async def test_open_and_cancel_bursts_are_a_flood():
    request = S(value="wait:reset").SerializeToString()
    first = tunnel_pb2.MessageChunk(message_size=len(request), data=request)
    async with real_edge() as (edge, cloud, run):
        for burst in range(4):
            frames = []
            for i in range(1 + 2000 * burst, 2000 * (burst + 1), 2):
                frames.append(opening(i, "Unary", message=first, half_close=True))
                frames.append(Frame(stream_id=i, cancel=tunnel_pb2.Cancel(reason="reset")))
            await cloud.send(frames)
        status = await asyncio.wait_for(asyncio.shield(run), 5)
        assert status.code == EXHAUSTED
        assert "cancel" in status.message
        assert edge.task_count == 0


async def test_the_reader_yields_to_other_tasks_inside_a_big_outer_message():
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async with real_edge() as (_edge, cloud, run):
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        await cloud.send([Frame(ping=tunnel_pb2.Ping(id=i)) for i in range(900)])
        await frames_until(cloud, lambda f: f.HasField("pong") and f.pong.id == 899)
        stop.set()
        await task
        assert not run.done()
    # 900 frames applied in steps of 64: the ticker ran in between, not only afterwards.
    assert ticks - before >= 900 // 64


class StuckTransport(MemoryTransport):
    """A memory transport whose peer stops reading: sends block once ``stuck`` is set."""

    def __init__(self, inbox, outbox) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inbox, outbox)
        self.stuck = asyncio.Event()
        self.blocked = asyncio.Event()
        self.receives = 0

    async def send(self, frames):  # type: ignore[no-untyped-def]
        if self.stuck.is_set():
            self.blocked.set()
            await asyncio.Event().wait()
        await super().send(frames)

    async def recv(self):  # type: ignore[no-untyped-def]
        self.receives += 1
        return await super().recv()


def stuck_pair() -> tuple[StuckTransport, MemoryTransport]:
    to_cloud: asyncio.Queue = asyncio.Queue()
    to_edge: asyncio.Queue = asyncio.Queue()
    return StuckTransport(to_edge, to_cloud), MemoryTransport(to_cloud, to_edge)


async def test_a_peer_that_never_reads_gets_bounded_queues_then_resource_exhausted():
    config = TunnelConfig(ping_interval=0.2, max_outbound_bytes=1024 * 1024)
    edge_end, cloud_end = stuck_pair()
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    edge = Session(
        edge_end, role=Role.EDGE, config=config, hello=tunnel_pb2.Hello(), on_open=server.on_open
    )
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    await cloud_end.send([welcome(initial_window_bytes=2**31 - 1)])
    edge_end.stuck.set()  # from now on the fake cloud reads nothing
    # Streams of 16 KiB messages with a huge window: only the outbound bound holds them.
    request = I32(value=1000).SerializeToString()
    opens = [
        opening(i, "ServerStream", message=tunnel_pb2.MessageChunk(
            message_size=len(request), data=request), half_close=True)
        for i in range(1, 40, 2)
    ]  # fmt: skip
    await cloud_end.send(opens)
    await asyncio.wait_for(edge_end.blocked.wait(), 5)
    peak = 0

    async def ping_and_sample() -> None:
        # Pings keep the fake cloud "alive" for the silence bound; the reader keeps reading.
        nonlocal peak
        while True:
            peak = max(peak, edge.outbound.queued_bytes)
            await cloud_end.send([Frame(ping=tunnel_pb2.Ping(id=1))])
            await asyncio.sleep(0.01)  # pacing, not waiting for anything

    pinger = asyncio.ensure_future(ping_and_sample())
    try:
        await asyncio.wait_for(asyncio.shield(run), 10)
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
    status = run.result()
    assert status.code == EXHAUSTED
    assert "does not read" in status.message
    assert peak <= 2 * config.max_outbound_bytes + 64 * 1024


async def test_the_reader_stops_reading_while_pongs_are_not_sent():
    edge_end, cloud_end = stuck_pair()
    edge = Session(edge_end, role=Role.EDGE, hello=tunnel_pb2.Hello())
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    await cloud_end.send([welcome()])
    await frames_until(cloud_end, lambda f: f.HasField("ping"))
    edge_end.stuck.set()
    for i in range(20):
        await cloud_end.send([Frame(ping=tunnel_pb2.Ping(id=i)) for _ in range(10)])
    await asyncio.wait_for(edge_end.blocked.wait(), 5)
    for _ in range(50):
        await asyncio.sleep(0)
    # 50 pongs queued: the reader stopped before the rest of the pings (and before the
    # later outer messages, which stay unread in the transport).
    assert edge.outbound.queued_controls == 50
    assert edge_end.receives < 20
    edge.close()
    await asyncio.wait_for(run, 5)


async def test_producers_wait_when_the_outbound_queue_is_full():
    config = TunnelConfig(max_outbound_bytes=1024 * 1024)
    async with running_rig(edge_config=config) as rig:
        edge = rig.edge_session
        peak = 0
        stop = False

        async def watch() -> None:
            nonlocal peak
            while not stop:
                peak = max(peak, edge.outbound.queued_bytes)
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        calls = [rig.tunnel_stub.ServerStream(I32(value=64), timeout=20) for _ in range(30)]
        counts = await asyncio.gather(*(count(c) for c in calls))
        stop = True
        await watcher
        assert counts == [64] * 30
        # 30 streams of 1 MiB, windows of 256 KiB each: 7.5 MiB may be sent at once, but
        # the queue stays near its bound (one chunk over per waiting producer at most).
        assert peak <= config.max_outbound_bytes + 30 * 64 * 1024


async def count(call) -> int:  # type: ignore[no-untyped-def]
    return len([m async for m in call])


# -- item 2: flow control bounds buffered bytes ---------------------------------------------


async def test_credit_comes_back_only_as_the_application_consumes():
    async with real_cloud(initial_window_bytes=65536) as (cloud, edge, run):
        call = EchoStub(TunnelChannel(cloud)).ServerStream(I32(value=3), timeout=10)
        opened = await frames_until(edge, lambda f: f.HasField("open"))
        stream_id = next(f.stream_id for f in opened if f.HasField("open"))
        window = cloud.config.initial_window_bytes
        # The fake edge answers with a 1 MiB message in 100 KB chunks, as far as credit goes.
        message = b"z" * (1 << 20)
        await edge.send([chunk(stream_id, message[:100_000], size=len(message))])
        sent = 100_000
        updates = await frames_until(edge, lambda f: f.HasField("window_update"))
        granted = sum(f.window_update.increment for f in updates if f.HasField("window_update"))
        # A message larger than the window gets exactly the credit to finish it, once.
        assert window + granted == len(message)
        while sent < len(message):
            await edge.send([chunk(stream_id, message[sent : sent + 100_000])])
            sent += 100_000
        # Whole message held, nothing consumed: no more credit, however long we wait.
        await edge.send([chunk(stream_id, b"q" * 10, size=10)])
        status = await asyncio.wait_for(asyncio.shield(run), 5)
        assert status.code == INVALID
        assert "exceeds credit" in status.message
        assert call.done()


async def test_a_message_larger_than_the_window_still_arrives_and_the_budget_comes_back():
    async with running_rig() as rig:
        replies = await asyncio.gather(
            *(rig.tunnel_stub.Unary(S(value="big:3000000"), timeout=20) for _ in range(4))
        )
        assert all(len(r.value) == 3_000_000 for r in replies)
        cloud = rig.cloud_session
        assert cloud.budget.lent == 0  # every borrowed byte was taken back
        assert cloud.budget.queued_messages == 0
        stream = rig.tunnel_stub.ServerStream(I32(value=64), timeout=10)
        assert await count(stream) == 64


async def test_large_messages_wait_for_the_budget_instead_of_failing():
    config = TunnelConfig(max_message_bytes=1_000_000, max_buffered_bytes=1_000_000)
    async with running_rig(cloud_config=config) as rig:
        # Three 900 kB replies at once need 3 x 640 kB of extra credit; the budget lends
        # one at a time and each waits its turn.
        replies = await asyncio.gather(
            *(rig.tunnel_stub.Unary(S(value="big:900000"), timeout=20) for _ in range(3))
        )
        assert [len(r.value) for r in replies] == [900_000] * 3
        assert rig.cloud_session.budget.lent == 0


async def test_unread_empty_messages_are_bounded_per_tunnel():
    config = TunnelConfig(max_queued_messages=100)
    async with real_edge(config) as (edge, cloud, run):
        empty = tunnel_pb2.MessageChunk(message_size=0)
        request = S(value="wait:unread").SerializeToString()  # the handler reads one, waits
        first = tunnel_pb2.MessageChunk(message_size=len(request), data=request)
        await cloud.send([opening(1, "Unary", message=first)])
        await cloud.send([Frame(stream_id=1, message=empty)] * 150)
        sent = await frames_until(cloud, lambda f: f.HasField("close"))
        close = next(f.close for f in sent if f.HasField("close"))
        assert close.status.code == EXHAUSTED
        assert not run.done()
        assert edge.budget.queued_messages == 0


# -- item 3: limits a peer cannot raise --------------------------------------------------


async def test_max_concurrent_streams_is_announced_both_ways():
    edge_end, cloud_end = memory_transport_pair()
    edge = Session(
        edge_end,
        role=Role.EDGE,
        config=TunnelConfig(max_concurrent_streams=7),
        hello=tunnel_pb2.Hello(),
    )
    cloud = Session(cloud_end, role=Role.CLOUD, config=TunnelConfig(max_concurrent_streams=9))
    runs = [asyncio.ensure_future(edge.run()), asyncio.ensure_future(cloud.run())]
    await asyncio.wait_for(asyncio.gather(edge.ready.wait(), cloud.ready.wait()), 5)
    assert cloud.hello.max_concurrent_streams == 7
    assert cloud.peer_max_streams == 7
    assert edge.welcome.max_concurrent_streams == 9
    assert edge.peer_max_streams == 9
    await cloud.drain(1.0)
    await asyncio.wait_for(asyncio.gather(*runs), 5)


async def test_a_peer_without_the_field_gets_the_documented_default():
    async with real_cloud() as (cloud, _edge, _run):  # the hello has no max_concurrent_streams
        assert cloud.peer_max_streams == 100


async def test_the_cloud_queues_calls_beyond_the_edges_limit():
    config = TunnelConfig(max_concurrent_streams=3)
    async with running_rig(edge_config=config) as rig:
        cloud = rig.cloud_session
        waits = [rig.tunnel_stub.Unary(S(value=f"wait:q{i}"), timeout=20) for i in range(5)]
        state = rig.servicer.state
        await asyncio.wait_for(
            asyncio.gather(*(state.event(state.entered, f"q{i}").wait() for i in range(3))), 5
        )
        assert cloud.opens_sent - 0 >= 3
        assert rig.edge_session.active_streams == 3
        assert "q3" not in state.entered  # the fourth waits at the cloud, not at the edge
        waits[0].cancel()
        await asyncio.wait_for(state.event(state.entered, "q3").wait(), 5)
        for call in waits[1:]:
            call.cancel()
        assert (await rig.tunnel_stub.Unary(S(value="after"), timeout=5)).value == "echo:after"


async def test_opens_beyond_the_limit_are_refused_then_a_violation():
    config = TunnelConfig(max_concurrent_streams=4)
    async with real_edge(config) as (_edge, cloud, run):
        request = S(value="wait:x").SerializeToString()
        first = tunnel_pb2.MessageChunk(message_size=len(request), data=request)
        await cloud.send([opening(i, "Unary", message=first) for i in (1, 3, 5, 7)])
        await cloud.send([opening(9, "Unary")])
        sent = await frames_until(cloud, lambda f: f.HasField("close"))
        refusal = next(f for f in sent if f.HasField("close"))
        assert refusal.stream_id == 9
        assert refusal.close.status.code == EXHAUSTED
        assert "max_concurrent_streams 4" in refusal.close.status.message
        assert not run.done()
        # A caller that keeps ignoring the limit is a protocol violation.
        await cloud.send([opening(i, "Unary") for i in range(11, 11 + 2 * 20, 2)])
        status = await asyncio.wait_for(asyncio.shield(run), 5)
        assert status.code == INVALID
        assert "max_concurrent_streams" in status.message


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"edge_id": "e" * (20 << 20)}, "hello.edge_id: 20971520 bytes exceeds the limit of 128"),
        ({"hospital_id": "h" * 200}, "hello.hospital_id: 200 bytes"),
        ({"services": [f"s{i}" for i in range(10_000)]}, "hello.services: 10000 entries"),
        ({"services": ["x" * 300]}, "hello.services[0]: 300 bytes"),
        ({"capabilities": ["c"] * 300}, "hello.capabilities: 300 entries"),
        ({"software_version": "9" * 129}, "hello.software_version: 129 bytes"),
        ({"initial_window_bytes": 2**32 - 1}, "hello.initial_window_bytes: 4294967295 is outside"),
        ({"initial_window_bytes": 10}, "hello.initial_window_bytes: 10 is outside"),
    ],
    ids=[
        "huge-edge-id",
        "hospital",
        "many-services",
        "long-service",
        "capabilities",
        "version",
        "window-too-big",
        "window-too-small",
    ],
)
async def test_a_hello_over_a_limit_is_refused_naming_the_field(fields, named):
    checked = []
    edge_end, cloud_end = memory_transport_pair()
    cloud = Session(cloud_end, role=Role.CLOUD, accept_hello=checked.append)
    run = asyncio.ensure_future(cloud.run())
    await edge_end.send([hello(**fields)])
    reply = (await asyncio.wait_for(edge_end.recv(), 5))[0]
    status = await asyncio.wait_for(run, 5)
    assert status.code == INVALID
    assert named in status.message
    assert reply.go_away.status.code == INVALID
    assert named in reply.go_away.status.message
    assert checked == []  # refused before any other work


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"node_id": "n" * 5000}, "welcome.node_id"),
        ({"warnings": ["w" * 2000]}, "welcome.warnings[0]"),
        ({"initial_window_bytes": 2**32 - 1}, "welcome.initial_window_bytes"),
    ],
)
async def test_an_edge_refuses_a_welcome_over_a_limit(fields, named):
    edge_end, cloud_end = memory_transport_pair()
    edge = Session(edge_end, role=Role.EDGE, hello=tunnel_pb2.Hello())
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    frame = welcome(**fields)
    if "ping" in named:
        frame.welcome.ping_interval.FromNanoseconds(1)
    await cloud_end.send([frame])
    status = await asyncio.wait_for(run, 5)
    assert status.code == INVALID
    assert named in status.message


async def test_a_welcome_with_a_ping_interval_out_of_range_is_refused():
    edge_end, cloud_end = memory_transport_pair()
    edge = Session(edge_end, role=Role.EDGE, hello=tunnel_pb2.Hello())
    run = asyncio.ensure_future(edge.run())
    await cloud_end.recv()
    frame = welcome()
    frame.welcome.ping_interval.FromNanoseconds(1000)  # a ping every microsecond
    await cloud_end.send([frame])
    status = await asyncio.wait_for(run, 5)
    assert status.code == INVALID
    assert "welcome.ping_interval" in status.message


@pytest.mark.parametrize("role", ["edge", "cloud"])
async def test_a_window_update_that_overflows_the_credit_is_a_violation(role):
    if role == "edge":
        async with real_edge() as (edge, cloud, run):
            await cloud.send([opening(1, "ReadWrite")])
            big = tunnel_pb2.WindowUpdate(increment=2**31 - 1)
            await cloud.send([Frame(stream_id=1, window_update=big)])
            status = await asyncio.wait_for(asyncio.shield(run), 5)
    else:
        async with real_cloud() as (cloud, edge, run):
            EchoStub(TunnelChannel(cloud)).Bidi(timeout=10)
            await frames_until(edge, lambda f: f.HasField("open"))
            big = tunnel_pb2.WindowUpdate(increment=2**31 - 1)
            await edge.send([Frame(stream_id=1, window_update=big)])
            status = await asyncio.wait_for(asyncio.shield(run), 5)
    assert status.code == INVALID
    assert "overflows" in status.message


async def test_oversized_request_headers_refuse_only_that_stream():
    async with real_edge() as (_edge, cloud, run):
        frame = opening(1, "Unary")
        frame.open.metadata.add(key="x-big", value=b"m" * 100_000)
        request = S(value="ok").SerializeToString()
        fine = opening(3, "Unary", half_close=True)
        fine.open.message.message_size = len(request)
        fine.open.message.data = request
        await cloud.send([frame, fine])
        sent = await frames_until(cloud, lambda f: f.HasField("close") and f.stream_id == 3)
        closes = {f.stream_id: f.close for f in sent if f.HasField("close")}
        assert closes[1].status.code == EXHAUSTED
        assert "request headers of 100" in closes[1].status.message
        assert closes[3].status.code == 0
        assert not run.done()


async def test_oversized_response_trailers_fail_only_that_call():
    async with real_cloud() as (cloud, edge, run):
        stub = EchoStub(TunnelChannel(cloud))
        call = stub.Unary(S(value="x"), timeout=10)
        await frames_until(edge, lambda f: f.HasField("open"))
        close = tunnel_pb2.CloseStream()
        close.trailers.add(key="x-big", value=b"t" * 100_000)
        await edge.send([Frame(stream_id=1, close=close)])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not run.done()


# -- item 7: drains carry reconnect_after ------------------------------------------------


async def test_a_draining_cloud_spreads_reconnects():
    spread = 4.0
    hints = []
    for _ in range(8):
        async with real_cloud(TunnelConfig(drain_reconnect_spread=spread)) as (cloud, edge, _run):
            drain = asyncio.ensure_future(cloud.drain(0.0))
            sent = await frames_until(edge, lambda f: f.HasField("go_away"))
            go_away = next(f.go_away for f in sent if f.HasField("go_away"))
            hints.append(go_away.reconnect_after.ToNanoseconds() / 1e9)
            await drain
    assert all(0.0 <= hint <= spread for hint in hints)
    assert len(set(hints)) > 1
