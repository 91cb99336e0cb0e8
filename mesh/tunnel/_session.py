"""The session engine: one outer stream, many inner calls (see ``tunnel.proto``).

A `Session` runs the handshake, then three owned tasks: the reader (applies inbound frames
in order, yielding to the event loop every few dozen frames so one tunnel cannot stall the
others), the writer (`Outbound`: sends everything queued since its last send as one outer
message) and the liveness timer (pings, the three-interval silence bound and the bound on an
outer message the peer does not take). Inner calls are `CallerStream` and `ServerStream`
objects; the channel and server adapters build gRPC semantics on them.

Every resource the peer can make a session hold is bounded (see `TunnelConfig`); exceeding a
bound ends the stream or the tunnel with the status the specification names, and logs one
line per kind of offence and tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._budget import PeerBudget
from mesh.tunnel._config import (
    DEFAULT_PEER_MAX_CONCURRENT_STREAMS,
    FRAME_OVERHEAD,
    TunnelConfig,
)
from mesh.tunnel._errors import (
    EndSession,
    LimitExceeded,
    ProtocolViolation,
    TunnelClosed,
    make_status,
    reason_of,
)
from mesh.tunnel._handshake import (
    HelloCheck,
    Refused,
    cloud_handshake,
    detached,
    edge_handshake,
    send_quietly,
)
from mesh.tunnel._limits import clip, metadata_size
from mesh.tunnel._metadata import DETAILS_KEY, pairs_from_entries
from mesh.tunnel._outbound import Outbound
from mesh.tunnel._stream import CallerStream, Final, ServerStream, _Stream
from mesh.tunnel._transport import Transport, TransportError

__all__ = ["Role", "Session"]

_log = logging.getLogger("mesh.tunnel")

_OK = grpc.StatusCode.OK.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
_M = TypeVar("_M", bound=Message)
_STREAM0_KINDS = frozenset({"hello", "welcome", "ping", "pong", "go_away"})
_YIELD_EVERY = 64
"""Frames applied between two yields to the event loop (an outer message may carry many)."""
_session_ids = itertools.count(1)


class Role(enum.Enum):
    """Which end of the tunnel a session is."""

    EDGE = "edge"
    CLOUD = "cloud"


def _timestamp_now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Session:
    """One tunnel: the engine on top of one outer stream.

    Build it with the role-specific keyword arguments, then ``await run()``; ``run`` returns
    the final status of the tunnel (OK after a clean drain). Frames from the peer are
    validated against the specification; a violation ends the tunnel with INVALID_ARGUMENT.

    Args:
        transport: The outer stream.
        role: EDGE (serves calls) or CLOUD (issues calls).
        config: Limits and timers.
        hello: Edge only: the hello to send (revisions, limits and capabilities are filled
            in from ``config``).
        accept_hello: Cloud only: checks the edge's hello; returns a refusal status (sent as
            ``go_away``) or ``None`` to accept.
        on_open: Edge only: called with each new `ServerStream`; must start its handler
            with `spawn`.
        welcome: Cloud only: session id, node id and epoch to put in the welcome.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        role: Role,
        config: TunnelConfig | None = None,
        hello: tunnel_pb2.Hello | None = None,
        accept_hello: HelloCheck | None = None,
        on_open: Callable[[ServerStream], None] | None = None,
        welcome: tunnel_pb2.Welcome | None = None,
    ) -> None:
        self.transport = transport
        self.role = role
        self.config = config or TunnelConfig()
        self.hello = hello or tunnel_pb2.Hello()
        self.welcome = welcome or tunnel_pb2.Welcome()
        self._accept_hello = accept_hello
        self._on_open = on_open
        self.name = f"{role.value}-{next(_session_ids)}"
        self.revision = 0
        self.peer_window = 0
        self.peer_max_message = 0
        self.peer_max_streams = DEFAULT_PEER_MAX_CONCURRENT_STREAMS
        """Streams this side may have open toward the peer at once (its announced limit)."""
        self.rtt: float | None = None
        """Last measured ping round-trip time in seconds."""
        self.peer_go_away: tunnel_pb2.GoAway | None = None
        self.peer_go_away_at: float | None = None
        """``time.monotonic()`` when the peer's go-away arrived (``reconnect_after`` counts
        from it)."""
        self.drain_requested = asyncio.Event()
        """Set when the peer sent ``go_away`` (the edge should connect a fresh tunnel)."""
        self.ready = asyncio.Event()
        """Set once the handshake has succeeded."""
        self.on_ready: list[Callable[[Session], None]] = []
        """Called (synchronously) right after the handshake has succeeded."""
        self.status: status_pb2.Status | None = None
        """Final status of the tunnel, once it has ended."""
        self.calls_started = 0
        self.opens_sent = 0
        """Streams this side really opened (calls beyond the peer's limit wait, and some end
        before they were opened)."""
        self.created = time.time()
        """Wall-clock time the session object was created (connected-since)."""
        self._streams: dict[int, CallerStream | ServerStream] = {}
        self._next_id = 1
        self._last_peer_id = 0
        self.outbound = Outbound(transport, self.config)
        """The bounded queue of frames for the peer (see `Outbound`)."""
        # Cloud side: streams opened and not ended, and opens held back by the peer's limit.
        self._opened = 0
        self._opened_upto = 0
        self._waiting_opens: dict[int, CallerStream] = {}
        self.budget = PeerBudget(self.config, self.outbound)
        """What the peer makes this tunnel hold (see `PeerBudget`)."""
        self._logged: set[str] = set()
        self._closing = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended: asyncio.Future[status_pb2.Status] | None = None
        self._last_rx = 0.0
        self._pings: dict[int, float] = {}
        self._ping_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public state ----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the tunnel has ended or is ending."""
        return self._closing

    @property
    def accepting_calls(self) -> bool:
        """True while new calls may be opened on this tunnel (cloud side)."""
        return self.ready.is_set() and not (
            self._closing or self._draining or self.peer_go_away is not None
        )

    @property
    def active_streams(self) -> int:
        """Streams not yet ended."""
        return len(self._streams)

    @property
    def task_count(self) -> int:
        """Owned per-call tasks (handlers, request pumps) still running."""
        return len(self._tasks)

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> status_pb2.Status:
        """Runs the tunnel until it ends.

        Returns:
            The tunnel's final status: OK after a drain, UNAVAILABLE when the peer went away
            or fell silent, INVALID_ARGUMENT after a protocol violation, or the refusal.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ended = loop.create_future()
        self._last_rx = loop.time()
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        liveness: asyncio.Task[None] | None = None
        try:
            handshake = loop.create_task(self._handshake(), name=f"{self.name}-handshake")
            # If the owner cancels us just as the handshake ends with a refusal, wait_for
            # drops the refusal; mark it seen so asyncio does not log it as never retrieved.
            handshake.add_done_callback(_seen)
            try:
                leftover = await asyncio.wait_for(handshake, timeout=self.config.handshake_timeout)
            except TimeoutError:
                raise EndSession(
                    make_status(grpc.StatusCode.DEADLINE_EXCEEDED, "handshake timed out")
                ) from None
            self.ready.set()
            for callback in self.on_ready:
                callback(self)
            writer = loop.create_task(self._write_loop(), name=f"{self.name}-writer")
            reader = loop.create_task(self._read_loop(leftover), name=f"{self.name}-reader")
            liveness = loop.create_task(self._liveness(), name=f"{self.name}-liveness")
            for loop_task in (writer, reader, liveness):
                loop_task.add_done_callback(self._loop_task_done)
            status = await self._ended
        except EndSession as end:
            status = end.status
        except TransportError as err:
            status = make_status(err.code, err.details, "TUNNEL_LOST")
        except ProtocolViolation as err:
            status = self._violation_status(str(err))
            await send_quietly(self.transport, [self._go_away(status)])
        except asyncio.CancelledError:
            # The owner cancelled us (e.g. grpc cancels the Connect handler when the edge's
            # stream breaks): still fail every call and stop every task before leaving.
            status = make_status(grpc.StatusCode.UNAVAILABLE, "tunnel lost", "TUNNEL_LOST")
            self._mark_closing()
            self.status = status
            self._teardown(status)
            for task in (reader, liveness, writer):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                *(t for t in (reader, liveness, writer) if t is not None), return_exceptions=True
            )
            await self._reap_tasks()
            raise
        finally:
            self._mark_closing()
            # Not the reader: cancelling a task inside grpc.aio's ``call.read()`` cancels the
            # whole outer call, which would drop the frames the writer still has to flush.
            if liveness is not None:
                liveness.cancel()
        self.status = status
        self._teardown(status)
        if writer is not None:
            self.outbound.wake_all()
            await self._settle(writer, 5.0 if status.code == _OK else 2.0)
        await self.transport.close()
        if reader is not None:
            # A drained edge lets the cloud see the end of its stream before cancelling.
            linger = 5.0 if self.role is Role.EDGE and status.code == _OK else 0.0
            await self._settle(reader, linger)
        if liveness is not None:
            await self._settle(liveness, 0.0)
        await self._reap_tasks()
        return status

    def _loop_task_done(self, task: asyncio.Task[None]) -> None:
        # A loop that stops on its own has already called _finish; one that was killed by a
        # stray cancellation or a bug must still end the session rather than hang it.
        if not self._closing and (task.cancelled() or task.exception() is not None):
            self._finish(make_status(grpc.StatusCode.INTERNAL, f"{task.get_name()} stopped"))

    async def _settle(self, task: asyncio.Task[None], linger: float) -> None:
        if linger > 0:
            await asyncio.wait([task], timeout=linger)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def close(self, status: status_pb2.Status | None = None) -> None:
        """Ends the tunnel now; calls in flight fail with UNAVAILABLE."""
        self._finish(status or make_status(grpc.StatusCode.UNAVAILABLE, "tunnel closed"))

    async def drain(self, grace: float | None = None) -> None:
        """Sends ``go_away``, lets calls in flight finish (up to ``grace``), then ends.

        Args:
            grace: Seconds to wait for calls in flight; defaults to ``config.drain_grace``.
        """
        if self._closing:
            return
        if not self.ready.is_set():
            self.close(make_status(grpc.StatusCode.UNAVAILABLE, "shutting down", "DRAINING"))
            return
        if not self._draining:
            self._draining = True
            last = self._last_peer_id if self.role is Role.EDGE else 0
            frame = self._go_away(
                make_status(grpc.StatusCode.UNAVAILABLE, "draining", "DRAINING"), last
            )
            if self.role is Role.CLOUD:
                # A random share of the spread window: a node's edges come back spread out.
                wait = random.uniform(0.0, self.config.drain_reconnect_spread)
                frame.go_away.reconnect_after.FromNanoseconds(int(wait * 1e9))
            self.enqueue(frame)
        wait = self.config.drain_grace if grace is None else grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=wait)
        # Calls still running after the grace period end with UNAVAILABLE, visibly.
        for stream in list(self._streams.values()):
            if isinstance(stream, ServerStream):
                stream.close(
                    make_status(grpc.StatusCode.UNAVAILABLE, "drain grace expired", "DRAINING"), []
                )
                if stream.task is not None and not stream.task.done():
                    stream.task.cancel()
            else:
                stream.cancel(grpc.StatusCode.UNAVAILABLE, "drain grace expired", "draining")
        self._finish(make_status(grpc.StatusCode.OK, "drained"))

    def _finish(self, status: status_pb2.Status) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(status)
        elif self._ended is None:
            self._mark_closing()

    def _mark_closing(self) -> None:
        self._closing = True
        self.outbound.closing = True
        self.outbound.wake_all()

    def _teardown(self, status: status_pb2.Status) -> None:
        reason = f"tunnel closed: {status.message}" if status.message else "tunnel closed"
        # The calls still open end with how the tunnel ended (a clean end: it drained).
        why = reason_of(status) or ("DRAINING" if status.code == _OK else "")
        for stream in list(self._streams.values()):
            if isinstance(stream, CallerStream):
                stream.finish(Final(make_status(grpc.StatusCode.UNAVAILABLE, reason, why), []))
            else:
                stream.cancel_handler(reason)
        self._streams.clear()
        self._check_quiet()

    async def _reap_tasks(self) -> None:
        if not self._tasks:
            return
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=5.0)
        for task in pending:  # a servicer that swallows cancellation: report, don't hang
            _log.error("%s: task %s ignored cancellation", self.name, task.get_name())

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Starts a per-call task owned by this session (cancelled when it ends)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._check_quiet()
        if not task.cancelled() and task.exception() is not None:
            _log.error("%s: task %s failed", self.name, task.get_name(), exc_info=task.exception())

    def forget(self, stream_id: int) -> None:
        """Drops an ended stream from the table and releases what it held."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self.budget.stream_ended(stream)
        if isinstance(stream, CallerStream):
            if stream.waiting_open is not None:
                self._waiting_opens.pop(stream_id, None)
            else:
                self._opened -= 1
                if self._waiting_opens and not self._closing:
                    self._open_waiting()
        if not self._streams:
            self._check_quiet()

    def _check_quiet(self) -> None:
        if not self._streams and not self._tasks:
            self._idle.set()

    async def wait_quiet(self) -> None:
        """Waits until no stream is open and no per-call task is running."""
        await self._idle.wait()

    # -- handshake -------------------------------------------------------------------------

    async def _handshake(self) -> list[tunnel_pb2.Frame]:
        if self.role is Role.EDGE:
            try:
                agreed = await edge_handshake(self.transport, self.config, self.hello)
            except Refused as refused:
                self.peer_go_away = refused.go_away
                self.peer_go_away_at = time.monotonic()
                raise
        else:
            agreed = await cloud_handshake(
                self.transport, self.config, self.welcome, self._accept_hello, self.name
            )
        self.hello, self.welcome = agreed.hello, agreed.welcome
        self.revision = self.outbound.revision = agreed.revision
        self.peer_window = agreed.peer_window
        self.peer_max_message = agreed.peer_max_message
        self.peer_max_streams = agreed.peer_max_streams
        return agreed.leftover

    @property
    def ping_interval(self) -> float:
        """Seconds between pings; the edge uses the cloud's value from the welcome."""
        if self.role is Role.EDGE and self.welcome.HasField("ping_interval"):
            seconds = self.welcome.ping_interval.ToNanoseconds() / 1e9
            if seconds > 0:
                return seconds
        return self.config.ping_interval

    # -- writing ---------------------------------------------------------------------------

    def enqueue(
        self, frame: tunnel_pb2.Frame, cost: int = FRAME_OVERHEAD, *, control: bool = False
    ) -> None:
        """Queues a frame; the writer sends everything queued as one outer message.

        Args:
            frame: The frame.
            cost: Its size in the outbound bound (see `Outbound.put`).
            control: It answers a control frame of the peer (a pong, a refusal).
        """
        self.outbound.put(frame, cost, control)

    async def _write_loop(self) -> None:
        try:
            await self.outbound.run()
        except TransportError as err:
            self._finish(make_status(err.code, err.details))
        except Exception:
            _log.exception("%s: writer failed", self.name)
            self._finish(make_status(grpc.StatusCode.INTERNAL, "tunnel writer failed"))

    def _go_away(self, status: status_pb2.Status, last: int | None = None) -> tunnel_pb2.Frame:
        go_away = tunnel_pb2.GoAway(
            last_stream_id=self._last_peer_id if last is None else last, status=status
        )
        return tunnel_pb2.Frame(stream_id=0, go_away=go_away)

    def _violation_status(self, message: str) -> status_pb2.Status:
        _log.warning(
            "%s: closing the tunnel with INVALID_ARGUMENT: protocol violation: %s",
            self.name,
            message,
        )
        return make_status(
            grpc.StatusCode.INVALID_ARGUMENT, f"protocol violation: {message}", "PROTOCOL_VIOLATION"
        )

    def _exhausted_status(self, message: str) -> status_pb2.Status:
        _log.warning("%s: closing the tunnel with RESOURCE_EXHAUSTED: %s", self.name, message)
        return make_status(_EXHAUSTED, message, "LIMIT_EXCEEDED")

    def _log_once(self, kind: str, message: str, *args: object) -> None:
        # One line per kind of offence and tunnel: a flood must not become a log flood.
        if kind not in self._logged:
            self._logged.add(kind)
            _log.warning(message, *args)

    def exhaust_stream(self, stream: _Stream, reason: str, kind: str) -> None:
        """Ends one stream with RESOURCE_EXHAUSTED (the peer made it hold too much).

        Args:
            stream: The stream.
            reason: The status message.
            kind: What was exceeded; the first stream per kind and tunnel is logged.
        """
        self._log_once(
            kind, "%s: ending stream %d with RESOURCE_EXHAUSTED: %s", self.name, stream.id, reason
        )
        if isinstance(stream, ServerStream):
            stream.close(make_status(_EXHAUSTED, reason), [])
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
        else:
            assert isinstance(stream, CallerStream)
            stream.cancel(_EXHAUSTED, reason, reason)

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self, leftover: list[tunnel_pb2.Frame]) -> None:
        assert self._loop is not None
        loop = self._loop
        outbound = self.outbound
        control_bound = self.config.max_queued_control_frames
        on_frame = self._on_frame
        try:
            await self._apply(leftover)
            while True:
                if outbound.reader_must_wait:
                    await outbound.wait_reader_room()  # replies pile up: stop reading
                frames = await self.transport.recv()
                if frames is None:
                    if self.peer_go_away is not None or self._draining:
                        self._finish(make_status(grpc.StatusCode.OK, "peer drained the tunnel"))
                    else:
                        self._finish(
                            make_status(
                                grpc.StatusCode.UNAVAILABLE, "peer closed the tunnel", "PEER_CLOSED"
                            )
                        )
                    return
                self._last_rx = loop.time()
                if self._closing:
                    continue  # ending: keep reading until the peer's end, apply nothing
                if not frames:
                    raise ProtocolViolation("empty outer message")
                if (
                    len(frames) < _YIELD_EVERY
                    and outbound.queued_controls + len(frames) < control_bound
                ):
                    # The common case: few frames, each may add at most one reply.
                    for frame in frames:
                        on_frame(frame)
                        if self._closing:
                            break
                else:
                    await self._apply(frames)
        except ProtocolViolation as err:
            status = self._violation_status(str(err))
            self.enqueue(self._go_away(status))
            self._finish(status)
        except LimitExceeded as err:
            status = self._exhausted_status(str(err))
            self.enqueue(self._go_away(status))
            self._finish(status)
        except EndSession as end:
            self._finish(end.status)
        except TransportError as err:
            if err.code is _EXHAUSTED:  # gRPC's own limit, e.g. an oversized outer message
                self._finish(self._exhausted_status(err.details))
            else:
                self._finish(make_status(err.code, err.details, "TUNNEL_LOST"))
        except Exception:
            _log.exception("%s: reader failed", self.name)
            self._finish(make_status(grpc.StatusCode.INTERNAL, "tunnel reader failed"))

    async def _apply(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        outbound = self.outbound
        control_bound = self.config.max_queued_control_frames
        on_frame = self._on_frame
        countdown = _YIELD_EVERY
        for frame in frames:
            countdown -= 1
            if not countdown:
                # A big outer message must not keep the other tunnels from the event loop.
                countdown = _YIELD_EVERY
                await asyncio.sleep(0)
                if self._closing:
                    return
            if outbound.queued_controls >= control_bound:
                await outbound.wait_reader_room()  # unsent pongs: read no further meanwhile
                if self._closing:
                    return
            on_frame(frame)
            if self._closing:
                return

    def _on_frame(self, frame: tunnel_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        if kind is None:
            raise ProtocolViolation("frame with no kind")
        stream_id = frame.stream_id
        if stream_id == 0:
            self._on_tunnel_frame(kind, frame)
        elif kind in _STREAM0_KINDS:
            raise ProtocolViolation(f"{kind} on stream {stream_id}")
        elif self.role is Role.EDGE:
            self._on_server_frame(stream_id, kind, frame)
        else:
            self._on_caller_frame(stream_id, kind, frame)

    def _on_tunnel_frame(self, kind: str, frame: tunnel_pb2.Frame) -> None:
        self.budget.idle_frame(kind)
        if kind == "ping":
            pong = tunnel_pb2.Pong(
                id=frame.ping.id, ping_sent_at=frame.ping.sent_at, sent_at=_timestamp_now()
            )
            self.enqueue(tunnel_pb2.Frame(stream_id=0, pong=pong), control=True)
        elif kind == "pong":
            sent = self._pings.pop(frame.pong.id, None)
            if sent is not None and self._loop is not None:
                self.rtt = self._loop.time() - sent
        elif kind == "go_away":
            self._on_go_away(frame.go_away)
        else:
            raise ProtocolViolation(f"{kind} on stream 0 after the handshake")

    def _on_go_away(self, go_away: tunnel_pb2.GoAway) -> None:
        code = go_away.status.code
        message = clip(go_away.status.message, self.config.max_text_bytes)
        if code not in (_OK, _UNAVAILABLE):
            raise EndSession(status_pb2.Status(code=code, message=f"peer reported: {message}"))
        if self.peer_go_away is None:
            self.peer_go_away_at = time.monotonic()
        self.peer_go_away = detached(go_away)
        self.drain_requested.set()
        if self.role is Role.CLOUD:
            for stream in list(self._streams.values()):
                if stream.id > go_away.last_stream_id and isinstance(stream, CallerStream):
                    stream.finish(
                        Final(
                            make_status(
                                grpc.StatusCode.UNAVAILABLE, "edge is draining", "DRAINING"
                            ),
                            [],
                        )
                    )

    def _on_server_frame(self, stream_id: int, kind: str, frame: tunnel_pb2.Frame) -> None:
        if stream_id % 2 == 0:
            raise ProtocolViolation(f"even stream id {stream_id} from the cloud")
        if kind == "open":
            if stream_id <= self._last_peer_id:
                raise ProtocolViolation(f"open reuses stream id {stream_id}")
            self._last_peer_id = stream_id
            self._open_server_stream(stream_id, frame.open)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_peer_id:
                raise ProtocolViolation(f"{kind} for unknown stream {stream_id}")
            self.budget.crossing_frame(f"{kind} for ended stream {stream_id}")
            return
        assert isinstance(stream, ServerStream)
        if kind == "message":
            if stream.inbox_closed:
                raise ProtocolViolation(f"message after half_close on stream {stream_id}")
            self._server_chunk(stream, frame.message)
        elif kind == "half_close":
            if stream.inbox_closed or stream.mid_message:
                raise ProtocolViolation(f"misplaced half_close on stream {stream_id}")
            stream.close_inbox()
        elif kind == "cancel":
            self.budget.idle_frame(kind)  # open-and-cancel bursts cost a handler each
            stream.cancel_handler(
                clip(frame.cancel.reason, self.config.max_text_bytes) or "cancelled by caller"
            )
        elif kind == "window_update":
            self.budget.idle_frame(kind)
            stream.add_credit(frame.window_update.increment)
        else:
            raise ProtocolViolation(f"{kind} sent by the caller on stream {stream_id}")

    def _server_chunk(self, stream: ServerStream, chunk: tunnel_pb2.MessageChunk) -> None:
        if not chunk.data and stream.mid_message:
            self.budget.idle_frame("empty chunk")
        if not stream.on_chunk(chunk):
            stream.close(
                make_status(
                    _EXHAUSTED,
                    f"Received message larger than max ({chunk.message_size} vs. "
                    f"{self.config.max_message_bytes})",
                ),
                [],
            )
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()

    def _refuse(self, stream_id: int, code: grpc.StatusCode, reason: str) -> None:
        close = tunnel_pb2.CloseStream(status=make_status(code, reason))
        self.enqueue(tunnel_pb2.Frame(stream_id=stream_id, close=close), control=True)

    def _open_server_stream(self, stream_id: int, open_frame: tunnel_pb2.OpenStream) -> None:
        assert self._loop is not None
        if self._draining or self._on_open is None:
            self._refuse(stream_id, grpc.StatusCode.UNAVAILABLE, "tunnel is draining")
            return
        config = self.config
        limit = config.max_concurrent_streams
        # Handlers of cancelled streams still finishing count too (rapid reset), with room
        # for the ones a well-behaved caller cancelled just before opening new streams.
        if len(self._streams) >= limit or len(self._tasks) >= 2 * limit:
            self.budget.refusal()
            reason = f"too many concurrent streams (max_concurrent_streams {limit})"
            self._log_once(
                "streams", "%s: refusing streams with RESOURCE_EXHAUSTED: %s", self.name, reason
            )
            self._refuse(stream_id, _EXHAUSTED, reason)
            return
        size = len(open_frame.method)
        if open_frame.metadata:
            size += metadata_size(open_frame.metadata)
        if open_frame.HasField("trace"):
            trace = open_frame.trace
            size += len(trace.traceparent) + len(trace.tracestate)
        if size > config.max_metadata_bytes:
            reason = (
                f"request headers of {size} bytes exceed the limit of {config.max_metadata_bytes}"
            )
            self._log_once(
                "headers", "%s: refusing a stream with RESOURCE_EXHAUSTED: %s", self.name, reason
            )
            self._refuse(stream_id, _EXHAUSTED, reason)
            return
        deadline = None
        if open_frame.HasField("timeout"):
            deadline = self._loop.time() + open_frame.timeout.ToNanoseconds() / 1e9
        stream = ServerStream(self, stream_id, self.peer_window, open_frame, deadline)
        self._streams[stream_id] = stream
        self._idle.clear()
        self.calls_started += 1
        if open_frame.HasField("message"):
            self._server_chunk(stream, open_frame.message)
            if stream.ended:
                return
        if open_frame.half_close:
            if stream.mid_message:
                raise ProtocolViolation(f"half_close inside a message on stream {stream_id}")
            stream.close_inbox()
        if deadline is not None:
            stream.timer = self._loop.call_at(deadline, stream.expire)
        self._on_open(stream)

    def _on_caller_frame(self, stream_id: int, kind: str, frame: tunnel_pb2.Frame) -> None:
        if stream_id % 2 == 0 or stream_id > self._opened_upto:
            raise ProtocolViolation(f"{kind} for stream {stream_id}, never opened")
        stream = self._streams.get(stream_id)
        if stream is None:
            self.budget.crossing_frame(f"{kind} for ended stream {stream_id}")
            return
        assert isinstance(stream, CallerStream)
        if kind == "message":
            if not frame.message.data and stream.mid_message:
                self.budget.idle_frame("empty chunk")
            self._caller_chunk(stream, frame.message)
        elif kind == "headers":
            if stream.headers is not None:
                raise ProtocolViolation(f"second headers on stream {stream_id}")
            if self._metadata_too_big(stream, "response headers", frame.headers.ByteSize()):
                return
            stream.set_headers(pairs_from_entries(frame.headers.metadata))
        elif kind == "close":
            self._caller_close(stream, frame.close)
        elif kind == "window_update":
            self.budget.idle_frame(kind)
            stream.add_credit(frame.window_update.increment)
        else:
            raise ProtocolViolation(f"{kind} sent by the server on stream {stream_id}")

    def _metadata_too_big(self, stream: CallerStream, what: str, size: int) -> bool:
        limit = self.config.max_metadata_bytes
        if size <= limit:
            return False
        self.exhaust_stream(
            stream, f"{what} of {size} bytes exceed the limit of {limit}", "headers"
        )
        return True

    def _caller_chunk(self, stream: CallerStream, chunk: tunnel_pb2.MessageChunk) -> bool:
        if stream.on_chunk(chunk):
            return True
        stream.cancel(
            _EXHAUSTED,
            f"Received message larger than max ({chunk.message_size} vs. "
            f"{self.config.max_message_bytes})",
            "response message too large",
        )
        return False

    def _caller_close(self, stream: CallerStream, close: tunnel_pb2.CloseStream) -> None:
        size = close.status.ByteSize()
        if close.trailers:
            size += metadata_size(close.trailers)
        if close.HasField("headers"):
            size += close.headers.ByteSize()
        limit = self.config.max_metadata_bytes
        if size > limit:
            reason = f"response headers and trailers of {size} bytes exceed the limit of {limit}"
            self._log_once(
                "headers",
                "%s: ending stream %d with RESOURCE_EXHAUSTED: %s",
                self.name,
                stream.id,
                reason,
            )
            stream.finish(Final(make_status(_EXHAUSTED, reason), []))  # the server closed it
            return
        if close.HasField("headers"):
            if stream.headers is not None:
                raise ProtocolViolation(f"second headers on stream {stream.id}")
            stream.set_headers(pairs_from_entries(close.headers.metadata))
        if close.HasField("message"):
            if stream.mid_message:
                raise ProtocolViolation(f"close.message inside a message on stream {stream.id}")
            if len(close.message.data) != close.message.message_size:
                raise ProtocolViolation(f"chunked close.message on stream {stream.id}")
            if not self._caller_chunk(stream, close.message):
                return
        trailers = pairs_from_entries(close.trailers)
        status = close.status
        if status.details and not any(key == DETAILS_KEY for key, _ in trailers):
            trailers.append((DETAILS_KEY, status.SerializeToString()))
        stream.finish(Final(status, trailers))

    # -- calls (cloud side) ------------------------------------------------------------------

    def open_stream(
        self,
        method: str,
        metadata: list[tunnel_pb2.MetadataEntry],
        *,
        timeout: float | None,
        trace: tunnel_pb2.TraceContext | None,
        first_message: bytes | None,
        half_close: bool,
    ) -> tuple[CallerStream, bool]:
        """Opens a call on a new stream (cloud side).

        Args:
            method: Full method name, ``/package.Service/Method``.
            metadata: Request headers.
            timeout: Seconds the caller has left, or ``None``.
            trace: W3C trace context, if any.
            first_message: The first request message, folded into ``open`` when the
                revision, the credit and the chunk size allow.
            half_close: Also fold the half-close (only together with the message).

        Returns:
            The stream and whether ``first_message`` was folded in (if not, the caller
            sends it with ``send_data``).

        Raises:
            TunnelClosed: The tunnel does not accept new calls.
        """
        assert self._loop is not None
        if not self.accepting_calls:
            raise TunnelClosed(
                make_status(grpc.StatusCode.UNAVAILABLE, "tunnel not accepting calls", "NO_TUNNEL")
            )
        stream_id = self._next_id
        self._next_id += 2
        stream = CallerStream(self, stream_id, self.peer_window)
        open_frame = tunnel_pb2.OpenStream(method=method, metadata=metadata)
        if timeout is not None:
            open_frame.timeout.CopyFrom(
                duration_pb2.Duration(
                    seconds=int(max(timeout, 0.0)), nanos=int(max(timeout, 0.0) % 1 * 1e9)
                )
            )
            stream.timer = self._loop.call_later(
                max(timeout, 0.0),
                stream.cancel,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Deadline Exceeded",
                "deadline exceeded",
            )
        if trace is not None:
            # Field by field: cheaper than CopyFrom on every traced call.
            into = open_frame.trace
            into.traceparent = trace.traceparent
            if trace.tracestate:
                into.tracestate = trace.tracestate
        self._streams[stream_id] = stream
        self._idle.clear()
        self.calls_started += 1
        if self._waiting_opens or self._opened >= self.peer_max_streams:
            # The peer's limit is reached: the open waits for a stream to end (like an
            # HTTP/2 client at SETTINGS_MAX_CONCURRENT_STREAMS); data waits with it.
            stream.deadline = None if timeout is None else self._loop.time() + max(timeout, 0.0)
            stream.waiting_open = open_frame
            stream.send_credit = 0
            self._waiting_opens[stream_id] = stream
            return stream, False
        folded = False
        # Our own frame: an estimate of its size is enough for the outbound bound.
        cost = FRAME_OVERHEAD + len(method)
        if (
            first_message is not None
            and self.revision >= 2
            and len(first_message) <= min(stream.send_credit, self.config.chunk_bytes)
        ):
            open_frame.message.message_size = len(first_message)
            open_frame.message.data = first_message
            stream.send_credit -= len(first_message)
            cost += len(first_message)
            folded = True
            if half_close:
                open_frame.half_close = True
                stream.half_closed = True
        self._send_open(stream, open_frame, cost)
        return stream, folded

    def _send_open(
        self, stream: CallerStream, open_frame: tunnel_pb2.OpenStream, cost: int
    ) -> None:
        self._opened += 1
        self.opens_sent += 1
        self._opened_upto = stream.id
        self.outbound.put(tunnel_pb2.Frame(stream_id=stream.id, open=open_frame), cost)

    def _open_waiting(self) -> None:
        assert self._loop is not None
        if self.peer_go_away is not None:
            return  # the peer takes no new streams: the waiting ones fail with it
        while self._waiting_opens and self._opened < self.peer_max_streams:
            stream = self._waiting_opens.pop(next(iter(self._waiting_opens)))
            open_frame = stream.waiting_open
            assert open_frame is not None
            stream.waiting_open = None
            if stream.deadline is not None:
                left = max(stream.deadline - self._loop.time(), 0.0)
                open_frame.timeout.FromNanoseconds(int(left * 1e9))
            self._send_open(stream, open_frame, FRAME_OVERHEAD + len(open_frame.method))
            stream.add_credit(self.peer_window)  # wakes its sender
            if stream.half_close_after_open:
                stream.half_close_after_open = False
                self.enqueue(
                    tunnel_pb2.Frame(stream_id=stream.id, half_close=tunnel_pb2.HalfClose())
                )

    # -- liveness --------------------------------------------------------------------------

    def ping(self) -> None:
        """Sends a ping; the pong updates `rtt`."""
        assert self._loop is not None
        ping_id = next(self._ping_ids)
        if len(self._pings) > 16:
            self._pings.clear()
        self._pings[ping_id] = self._loop.time()
        ping = tunnel_pb2.Ping(id=ping_id, sent_at=_timestamp_now())
        self.enqueue(tunnel_pb2.Frame(stream_id=0, ping=ping))

    async def probe(self, within: float) -> bool:
        """Pings the peer; True once anything arrives from it within ``within`` seconds.

        A gateway asks this of an edge's tunnel when another connection claims the same
        edge id. Any frame counts, not only the pong, so a busy tunnel whose pong waits
        behind data is not mistaken for a dead one.
        """
        loop = self._loop
        if loop is None or self._ended is None or self._ended.done() or self._closing:
            return False
        start = loop.time()
        self.ping()
        # Polled, not signalled: the reader's per-message path stays as it is, and a probe
        # runs only when two tunnels claim one edge id.
        while loop.time() - start < within:
            if self._last_rx > start:
                return True
            if self._ended.done():
                return False
            await asyncio.sleep(0.01)
        return self._last_rx > start

    async def _liveness(self) -> None:
        assert self._loop is not None
        interval = self.ping_interval
        # Both ends ping (the edge to detect a dead cloud, the cloud to know each tunnel's
        # RTT for operators: `hplus cloud tunnels`, hplus_tunnel_rtt_seconds).
        self.ping()
        while True:
            await asyncio.sleep(interval)
            now = self._loop.time()
            # First the stall: a reader paused by our own backpressure is not peer silence.
            started = self.outbound.send_started
            if started is not None and now - started > 3 * interval:
                status = self._exhausted_status(
                    f"the peer does not read: an outer message has waited {now - started:.1f}s "
                    "to be sent"
                )
                self.enqueue(self._go_away(status))
                self._finish(status)
                return
            silent = now - self._last_rx
            if silent > 3 * interval:
                self._finish(
                    make_status(
                        grpc.StatusCode.UNAVAILABLE, f"peer silent for {silent:.1f}s", "PEER_SILENT"
                    )
                )
                return
            self.ping()
