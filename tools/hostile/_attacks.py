"""The attacks: one function per attack class, each runnable from either end of a tunnel.

An attack function gets a `Peer` after the handshake (unless the attack does its own) and
returns notes of what it saw. A peer in the ``edge`` role attacks a cloud node; one in the
``gateway`` role attacks an edge that dialled it. `run_attack` wraps a function with the
handshake, the wait for the target to end the tunnel, and the result.

New attack classes are one function each, registered in `ATTACKS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.rpc import status_pb2

from hplus.tunnel.v1 import tunnel_pb2
from tools.hostile._peer import Peer, code_name, hello, welcome

__all__ = ["ATTACKS", "Attack", "AttackResult", "Options", "run_attack"]

Frame = tunnel_pb2.Frame
Notes = dict[str, Any]
_ADMIN = "/hplus.hospital.v1.EdgeAdminService/GetEdgeInfo"
"""A method every edge serves (its handler reads exactly one request)."""
_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs shared by every attack."""

    hospital: str = "hostile"
    """Hospital id in the hello (the credential's hospital)."""
    seconds: float = 10.0
    """How long the attack itself may run."""
    close_within: float = 15.0
    """How long to wait, after the attack, for the target to end the tunnel."""
    ping_interval: float = 0.5
    """Gateway role: the ping interval put in the welcome (the edge's liveness unit)."""
    reconnect_after: float = 0.0
    """drain-storm: ``go_away.reconnect_after`` to send (0: not set)."""


@dataclasses.dataclass
class AttackResult:
    """What the attacker saw; printed as JSON by the CLI."""

    attack: str
    role: str
    closed: bool
    """The target ended the tunnel."""
    code: str
    """How (gRPC status code name), from its go-away or the outer call's status."""
    details: str
    seconds_to_close: float | None
    """From the start of the attack to the end of the tunnel."""
    frames_sent: int
    bytes_sent: int
    notes: Notes = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (details cut to 300 characters)."""
        out = dataclasses.asdict(self)
        out["details"] = self.details[:300]
        return out


AttackFunction = Callable[[Peer, Options], Awaitable[Notes]]


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack class."""

    name: str
    summary: str
    run: AttackFunction
    roles: tuple[str, ...] = ("edge", "gateway")
    """Which ends it can be run from: ``edge`` (against a node), ``gateway`` (against an edge)."""
    handshake: bool = True
    """Send a correct hello / welcome first (False: the attack does its own)."""
    reads: bool = True
    """Read the target's messages while attacking (False: never read until the attack ends)."""
    calls: int = 0
    """Edge role: calls the node must be making to this hospital while the attack runs."""
    call_bytes: int = 0
    """Size of each of those calls' request."""
    hello: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Edge role: fields of the hello to override."""
    hang_up: bool = False
    """End the outer stream as soon as the attack is done (do not wait for the target)."""


# -- helpers ------------------------------------------------------------------------------


def _open(stream_id: int, *, data: bytes | None = None, size: int | None = None) -> Frame:
    frame = Frame(stream_id=stream_id)
    frame.open.method = _ADMIN
    if data is not None:
        frame.open.message.message_size = len(data) if size is None else size
        frame.open.message.data = data
    return frame


def _chunk(stream_id: int, data: bytes, size: int = 0) -> Frame:
    return Frame(stream_id=stream_id, message=tunnel_pb2.MessageChunk(message_size=size, data=data))


def _update(stream_id: int, increment: int) -> Frame:
    return Frame(stream_id=stream_id, window_update=tunnel_pb2.WindowUpdate(increment=increment))


def _their_window(peer: Peer) -> int:
    """The credit the target granted us per stream in its hello/welcome."""
    return peer.their_window or 64 * 1024


async def _until(peer: Peer, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(peer.closed.wait(), seconds)


async def _streams_opened_by_node(peer: Peer, seconds: float) -> list[int]:
    """Edge role: the streams the node opens within ``seconds`` (at least one)."""
    first = await peer.next_frame("open", timeout=seconds)
    opened = [first.stream_id]
    while not peer.frames.empty():
        frame = peer.frames.get_nowait()
        if frame.WhichOneof("kind") == "open":
            opened.append(frame.stream_id)
    return opened


async def _push(peer: Peer, stream_id: int, size: int, *, complete: bool, stall: float) -> int:
    """Sends ``size``-byte messages in 100 KB chunks, never beyond the credit.

    With ``complete``, message after message; without, one message short of its last byte
    (a partial message held open). Returns the bytes sent before the target stopped
    granting credit for ``stall`` seconds (or the stream or tunnel ended).
    """
    sent = 0
    offset = 0
    window = _their_window(peer)
    while not peer.closed.is_set():
        if offset == size:
            offset = 0
        credit = window + peer.window_updates.get(stream_id, 0) - sent
        room = size - offset - (0 if complete else 1)
        if room <= 0:
            await _until(peer, stall)  # holding the partial message
            return sent
        take = min(100_000, credit, room)
        if take <= 0:
            granted = peer.window_updates.get(stream_id, 0)
            waited = 0.0
            while peer.window_updates.get(stream_id, 0) == granted and not peer.closed.is_set():
                if waited >= stall:
                    return sent  # stalled: the target holds what it granted and no more
                await asyncio.sleep(0.05)
                waited += 0.05
            continue
        frame = _chunk(stream_id, b"\x00" * take, size if offset == 0 else 0)
        if not await peer.send([frame]):
            return sent
        sent += take
        offset += take
    return sent


# -- the attacks ------------------------------------------------------------------------


async def ping_flood(peer: Peer, opts: Options) -> Notes:
    """Outer messages of 20,000 pings each, pongs never read (issue 9, item 1)."""
    sent = 0
    for round_ in range(10):
        pings = [Frame(ping=tunnel_pb2.Ping(id=round_ * 20_000 + i)) for i in range(20_000)]
        if not await peer.send(pings):
            break
        sent += len(pings)
    return {"pings": sent}


async def empty_frames(peer: Peer, opts: Options) -> Notes:
    """Frames that carry nothing.

    Unsolicited pongs against a node; zero window updates and empty continuation chunks on a
    live stream against an edge.
    """
    if peer.role == "edge":
        frames = [Frame(pong=tunnel_pb2.Pong(id=i)) for i in range(5_000)]
    else:
        await peer.send([_open(1, data=b"\x00", size=100)])
        frames = [_update(1, 0), _chunk(1, b"")] * 2_500
    sent = 0
    for _ in range(10):
        if not await peer.send(frames):
            break
        sent += len(frames)
    return {"empty_frames": sent}


async def no_read(peer: Peer, opts: Options) -> Notes:
    """Never read the outer stream while the target has to write.

    The node is called with big requests (by the arena); the edge is called by us, over and
    over.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + opts.seconds
    opened = 0
    stream_id = 1
    while not peer.closed.is_set() and loop.time() < end:
        if peer.role == "edge":
            frames = [Frame(ping=tunnel_pb2.Ping(id=i)) for i in range(5)]  # alive, in budget
        else:
            frames = []
            for _ in range(20):
                frames.append(_open(stream_id, data=b""))
                frames[-1].open.half_close = True
                stream_id += 2
            opened += 20
        if not await peer.send(frames):
            break
        await asyncio.sleep(0.02)
    return {"calls_opened": opened}


async def big_outer(peer: Peer, opts: Options) -> Notes:
    """One outer message of 3 MiB (the tunnel's limit is 2 MiB)."""
    status = status_pb2.Status(code=14, message="x" * (3 * _MIB))
    await peer.send([Frame(go_away=tunnel_pb2.GoAway(status=status))])
    return {"outer_bytes": peer.bytes_sent}


async def garbage(peer: Peer, opts: Options) -> Notes:
    """Bytes that are not a tunnel message, instead of the hello (or after it)."""
    if peer.role == "gateway":
        await peer.next_frame("hello")
    await peer.send_raw(b"\xff\xff\xff\xff\x0f not a tunnel message " * 40)
    return {}


async def huge_handshake(peer: Peer, opts: Options) -> Notes:
    """A hello (or welcome) with a 1 MiB id and 10,000 list entries, under the outer limit."""
    names = [f"hplus.fake.v1.Service{i:05d}" for i in range(10_000)]
    if peer.role == "edge":
        await peer.send([hello(opts.hospital, edge_id="e" * _MIB, services=names)])
    else:
        await peer.next_frame("hello")
        await peer.send([welcome(opts.ping_interval, node_id="n" * _MIB, warnings=names)])
    return {"entries": len(names)}


async def window_handshake(peer: Peer, opts: Options) -> Notes:
    """``initial_window_bytes`` of 2^32-1 in the hello (or welcome)."""
    if peer.role == "edge":
        await peer.send([hello(opts.hospital, initial_window_bytes=2**32 - 1)])
    else:
        await peer.next_frame("hello")
        await peer.send([welcome(opts.ping_interval, initial_window_bytes=2**32 - 1)])
    return {}


async def window_overflow(peer: Peer, opts: Options) -> Notes:
    """Two window updates of 2^31-1 on a live stream (the credit overflows)."""
    if peer.role == "edge":
        stream_id = (await _streams_opened_by_node(peer, opts.seconds))[0]
    else:
        stream_id = 1
        await peer.send([_open(stream_id)])
    await peer.send([_update(stream_id, 2**31 - 1), _update(stream_id, 2**31 - 1)])
    return {"stream": stream_id}


async def flow_control(peer: Peer, opts: Options) -> Notes:
    """Send as much as the credit allows, then one chunk beyond it.

    Against a node: a call answered with 1 MiB messages in 100 KB chunks (its unary caller
    reads nothing before the end). Against an edge: a 4 MiB request held one byte short.
    """
    if peer.role == "edge":
        stream_id = (await _streams_opened_by_node(peer, opts.seconds))[0]
        accepted = await _push(peer, stream_id, _MIB, complete=True, stall=1.0)
    else:
        stream_id = 1
        await peer.send([_open(stream_id)])
        accepted = await _push(peer, stream_id, 4 * _MIB, complete=False, stall=1.0)
    overrun = await peer.send([_chunk(stream_id, b"\x01" * 100_000)])
    return {"bytes_accepted": accepted, "overrun_sent": overrun}


async def partial_messages(peer: Peer, opts: Options) -> Notes:
    """Thousands of messages started and never completed.

    On every call the node makes, or on streams we open to the edge.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + opts.seconds
    window = _their_window(peer)
    started = 0
    if peer.role == "edge":
        while not peer.closed.is_set() and loop.time() < end:
            with contextlib.suppress(TimeoutError):
                frame = await peer.next_frame("open", timeout=max(end - loop.time(), 0.01))
                data = b"\x00" * min(window, 64 * 1024)
                await peer.send([_chunk(frame.stream_id, data, 4 * _MIB)])
                started += 1
        return {"partial_messages": started}
    stream_id = 1
    chunk = b"\x00" * min(window, 200_000)  # five of them stay under the outer limit
    while not peer.closed.is_set() and loop.time() < end and started < 5_000:
        frames = []
        for _ in range(5):
            frames.append(_open(stream_id, data=chunk, size=4 * _MIB))
            stream_id += 2
        if not await peer.send(frames):
            break
        started += len(frames)
        await asyncio.sleep(0.001)
    return {"partial_messages": started}


async def opens(peer: Peer, opts: Options) -> Notes:
    """Streams opened and never ended.

    20,000 against an edge; against a node one is enough: an edge may open none.
    """
    if peer.role == "edge":
        await peer.send([_open(2)])
        return {"opened": 1}
    stream_id = 1
    for _ in range(20):
        frames = [_open(stream_id + 2 * i) for i in range(1_000)]
        stream_id += 2_000
        if not await peer.send(frames):
            break
    return {"opened": (stream_id - 1) // 2}


async def rapid_reset(peer: Peer, opts: Options) -> Notes:
    """Bursts of open-and-cancel pairs (HTTP/2 "rapid reset", CVE-2023-44487)."""
    stream_id = 1
    pairs = 0
    for _ in range(20):
        frames = []
        for _ in range(2_000):
            frames.append(_open(stream_id, data=b""))
            frames[-1].open.half_close = True
            frames.append(Frame(stream_id=stream_id, cancel=tunnel_pb2.Cancel(reason="reset")))
            stream_id += 2
        if not await peer.send(frames):
            break
        pairs += 2_000
    return {"pairs": pairs}


async def huge_metadata(peer: Peer, opts: Options) -> Notes:
    """100 KB of metadata per stream.

    In the response headers and trailers of the node's calls, or in the request headers of
    streams we open to the edge.
    """
    big = [tunnel_pb2.MetadataEntry(key=f"x-big-{i}", value=b"m" * 10_000) for i in range(10)]
    loop = asyncio.get_running_loop()
    end = loop.time() + opts.seconds
    if peer.role == "edge":
        answered = 0
        while not peer.closed.is_set() and loop.time() < end and answered < 20:
            with contextlib.suppress(TimeoutError):
                frame = await peer.next_frame("open", timeout=max(end - loop.time(), 0.01))
                if answered % 2:
                    reply = Frame(stream_id=frame.stream_id)
                    reply.headers.metadata.extend(big)
                else:
                    reply = Frame(stream_id=frame.stream_id)
                    reply.close.trailers.extend(big)
                await peer.send([reply])
                answered += 1
        return {"answered": answered}
    for batch in range(5):  # ten streams of 100 KB headers per outer message (under 2 MiB)
        frames = []
        for i in range(10):
            frame = _open(20 * batch + 2 * i + 1, data=b"")
            frame.open.half_close = True
            frame.open.metadata.extend(big)
            frames.append(frame)
        await peer.send(frames)
    refused: dict[str, int] = {}
    with contextlib.suppress(TimeoutError, EOFError):
        while sum(refused.values()) < 50:
            close = await peer.next_frame("close", timeout=opts.seconds)
            name = code_name(close.close.status.code)
            refused[name] = refused.get(name, 0) + 1
    return {"refused": refused}


async def drain_storm(peer: Peer, opts: Options) -> Notes:
    """Welcome, then go-away, then the end of the stream, at once (on every connection).

    What a node that drains as soon as an edge arrives looks like to the edge.
    """
    await peer.next_frame("hello")
    go_away = tunnel_pb2.GoAway(status=status_pb2.Status(code=14, message="draining"))
    if opts.reconnect_after:
        go_away.reconnect_after.FromNanoseconds(int(opts.reconnect_after * 1e9))
    await peer.send([welcome(opts.ping_interval), Frame(go_away=go_away)])
    return {}


ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack("ping-flood", "pings in outer messages of 20,000, pongs never read", ping_flood,
               reads=False),
        Attack("empty-frames", "frames that carry no data", empty_frames),
        Attack("no-read", "never read the outer stream", no_read, reads=False, calls=16,
               call_bytes=_MIB, hello={"initial_window_bytes": 2**31 - 1}),
        Attack("big-outer", "one outer message over the tunnel's limit", big_outer),
        Attack("garbage", "bytes that do not decode", garbage, handshake=False),
        Attack("huge-handshake", "a hello/welcome with a 1 MiB id and 10,000 entries",
               huge_handshake, handshake=False),
        Attack("window-handshake", "initial_window_bytes of 2^32-1", window_handshake,
               handshake=False),
        Attack("window-overflow", "window updates past 2^31-1", window_overflow, calls=1),
        Attack("flow-control", "1 MiB messages in 100 KB chunks, as far as credit goes",
               flow_control, calls=1),
        Attack("partial-messages", "thousands of messages never completed", partial_messages,
               calls=300),
        Attack("opens", "streams opened without end", opens),
        Attack("rapid-reset", "bursts of open and cancel", rapid_reset, roles=("gateway",)),
        Attack("huge-metadata", "100 KB of headers or trailers per stream", huge_metadata,
               calls=20),
        Attack("drain-storm", "welcome, go-away and the end of the stream at once, on every "
               "connection", drain_storm, roles=("gateway",), handshake=False, hang_up=True),
    )
}  # fmt: skip
"""Every attack, by name."""


# -- running one ------------------------------------------------------------------------


async def _handshake(peer: Peer, attack: Attack, opts: Options) -> None:
    if peer.role == "edge":
        await peer.send([hello(opts.hospital, **attack.hello)])
        frames = await _first_message(peer)
        if not frames or not frames[0].HasField("welcome"):
            raise EOFError(f"no welcome: {frames[0] if frames else 'stream ended'}")
        peer.their_window = frames[0].welcome.initial_window_bytes
        interval = frames[0].welcome.ping_interval.ToNanoseconds() / 1e9
        peer.keepalive = interval / 2 if interval > 0 else 1.0
    else:
        frames = await _first_message(peer)
        if not frames or not frames[0].HasField("hello"):
            raise EOFError("no hello")
        peer.their_window = frames[0].hello.initial_window_bytes
        await peer.send([welcome(opts.ping_interval)])
        peer.keepalive = opts.ping_interval / 2


async def _keep_alive(peer: Peer) -> None:
    if not peer.keepalive:
        return
    ping_id = 1 << 40
    while await peer.send([Frame(ping=tunnel_pb2.Ping(id=ping_id))]):
        ping_id += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(peer.closed.wait(), peer.keepalive)


async def _first_message(peer: Peer) -> list[Frame] | None:
    if peer.reading:
        frame = await peer.next_frame("welcome" if peer.role == "edge" else "hello")
        return [frame]
    return await asyncio.wait_for(peer.read_one(), 10)


async def run_attack(
    peer: Peer,
    attack: Attack,
    opts: Options,
    *,
    on_attacking: Callable[[], None] | None = None,
) -> AttackResult:
    """Runs ``attack`` on ``peer``: handshake, attack, then wait for the target to end it.

    Args:
        peer: The outer stream.
        attack: What to do.
        opts: Knobs.
        on_attacking: Called once the handshake is done (the node now routes calls to us).

    Returns:
        What the attacker saw.
    """
    role = peer.role
    if attack.reads:
        peer.start_reading()
    notes: Notes = {}
    if attack.handshake:
        await _handshake(peer, attack, opts)
    if on_attacking is not None:
        on_attacking()
    started = time.monotonic()
    # A hostile peer still pings: the target must not end it merely for silence.
    alive = asyncio.get_running_loop().create_task(_keep_alive(peer))
    try:
        notes = await asyncio.wait_for(attack.run(peer, opts), opts.seconds + 5.0)
    except (TimeoutError, EOFError) as err:
        notes["stopped"] = str(err) or type(err).__name__
    peer.start_reading()  # see how the target ends the tunnel
    closed = True if attack.hang_up else await peer.wait_closed(opts.close_within)
    alive.cancel()
    await asyncio.gather(alive, return_exceptions=True)
    return AttackResult(
        attack=attack.name,
        role=role,
        closed=closed,
        code=peer.code if closed else "",
        details=peer.details if closed else "",
        seconds_to_close=(
            round(peer.closed_at - started, 3) if closed and peer.closed_at is not None else None
        ),
        frames_sent=peer.frames_sent,
        bytes_sent=peer.bytes_sent,
        notes=notes,
    )
