"""The session engine: one outer stream, many inner calls (see ``tunnel.proto``).

A `Session` runs the handshake, then three owned tasks: the reader (applies every inbound
frame synchronously, so frame order is kept), the writer (sends everything queued since its
last send as one outer message: coalescing comes for free whenever frames queue up) and the
liveness timer (pings and the three-interval silence bound). Inner calls are `CallerStream`
and `ServerStream` objects; the channel and server adapters build gRPC semantics on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import TunnelConfig
from mesh.tunnel._errors import ProtocolViolation, TunnelClosed, make_status
from mesh.tunnel._metadata import DETAILS_KEY, pairs_from_entries
from mesh.tunnel._stream import CallerStream, Final, ServerStream
from mesh.tunnel._transport import Transport, TransportError

__all__ = ["Role", "Session"]

_log = logging.getLogger("mesh.tunnel")

_OK = grpc.StatusCode.OK.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_STREAM0_KINDS = frozenset({"hello", "welcome", "ping", "pong", "go_away"})
_session_ids = itertools.count(1)


class Role(enum.Enum):
    """Which end of the tunnel a session is."""

    EDGE = "edge"
    CLOUD = "cloud"


class _End(Exception):
    """Internal: the session must end with ``status``."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def _timestamp_now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _frame_cost(frame: tunnel_pb2.Frame) -> int:
    kind = frame.WhichOneof("kind")
    if kind == "message":
        return len(frame.message.data) + 16
    if kind in ("open", "close", "headers"):
        return frame.ByteSize()
    return 16


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
        accept_hello: Callable[
            [tunnel_pb2.Hello], Awaitable[status_pb2.Status | None] | status_pb2.Status | None
        ]
        | None = None,
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
        self.rtt: float | None = None
        """Last measured ping round-trip time in seconds."""
        self.peer_go_away: tunnel_pb2.GoAway | None = None
        self.drain_requested = asyncio.Event()
        """Set when the peer sent ``go_away`` (the edge should connect a fresh tunnel)."""
        self.ready = asyncio.Event()
        """Set once the handshake has succeeded."""
        self.on_ready: list[Callable[[Session], None]] = []
        """Called (synchronously) right after the handshake has succeeded."""
        self.status: status_pb2.Status | None = None
        """Final status of the tunnel, once it has ended."""
        self.calls_started = 0
        self.created = time.time()
        """Wall-clock time the session object was created (connected-since)."""
        self._streams: dict[int, CallerStream | ServerStream] = {}
        self._next_id = 1
        self._last_peer_id = 0
        self._out: list[tunnel_pb2.Frame] = []
        self._out_event = asyncio.Event()
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
                raise _End(
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
        except _End as end:
            status = end.status
        except TransportError as err:
            status = make_status(err.code, err.details)
        except ProtocolViolation as err:
            status = self._violation_status(str(err))
            await self._send_quietly([self._go_away(status)])
        except asyncio.CancelledError:
            # The owner cancelled us (e.g. grpc cancels the Connect handler when the edge's
            # stream breaks): still fail every call and stop every task before leaving.
            status = make_status(grpc.StatusCode.UNAVAILABLE, "tunnel lost")
            self._closing = True
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
            self._closing = True
            # Not the reader: cancelling a task inside grpc.aio's ``call.read()`` cancels the
            # whole outer call, which would drop the frames the writer still has to flush.
            if liveness is not None:
                liveness.cancel()
        self.status = status
        self._teardown(status)
        if writer is not None:
            self._out_event.set()
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
            self.close(make_status(grpc.StatusCode.UNAVAILABLE, "shutting down"))
            return
        if not self._draining:
            self._draining = True
            last = self._last_peer_id if self.role is Role.EDGE else 0
            self.enqueue(self._go_away(make_status(grpc.StatusCode.UNAVAILABLE, "draining"), last))
        wait = self.config.drain_grace if grace is None else grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=wait)
        # Calls still running after the grace period end with UNAVAILABLE, visibly.
        for stream in list(self._streams.values()):
            if isinstance(stream, ServerStream):
                stream.close(make_status(grpc.StatusCode.UNAVAILABLE, "drain grace expired"), [])
                if stream.task is not None and not stream.task.done():
                    stream.task.cancel()
            else:
                stream.cancel(grpc.StatusCode.UNAVAILABLE, "drain grace expired", "draining")
        self._finish(make_status(grpc.StatusCode.OK, "drained"))

    def _finish(self, status: status_pb2.Status) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(status)
        elif self._ended is None:
            self._closing = True

    def _teardown(self, status: status_pb2.Status) -> None:
        reason = f"tunnel closed: {status.message}" if status.message else "tunnel closed"
        for stream in list(self._streams.values()):
            if isinstance(stream, CallerStream):
                stream.finish(Final(make_status(grpc.StatusCode.UNAVAILABLE, reason), []))
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
        """Drops an ended stream from the table."""
        if self._streams.pop(stream_id, None) is not None and not self._streams:
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
            return await self._edge_handshake()
        return await self._cloud_handshake()

    async def _edge_handshake(self) -> list[tunnel_pb2.Frame]:
        hello = self.hello
        config = self.config
        del hello.revisions[:]
        hello.revisions.extend(config.revisions)
        hello.initial_window_bytes = config.initial_window_bytes
        hello.max_message_bytes = config.max_message_bytes
        if not hello.capabilities:
            hello.capabilities.extend(config.capabilities)
        await self.transport.send([tunnel_pb2.Frame(stream_id=0, hello=hello)])
        frames = await self.transport.recv()
        if frames is None:
            raise _End(make_status(grpc.StatusCode.UNAVAILABLE, "cloud closed the handshake"))
        if not frames:
            raise ProtocolViolation("empty outer message")
        first = frames[0]
        kind = first.WhichOneof("kind")
        if first.stream_id != 0 or kind not in ("welcome", "go_away"):
            raise ProtocolViolation(f"expected welcome, got {kind or 'an empty frame'}")
        if kind == "go_away":
            status = status_pb2.Status()
            status.CopyFrom(first.go_away.status)
            if status.code == _OK:
                status.code = _UNAVAILABLE
            raise _End(status)
        welcome = first.welcome
        if welcome.revision not in config.revisions:
            raise ProtocolViolation(f"welcome picked revision {welcome.revision}")
        if welcome.initial_window_bytes < 1 or welcome.max_message_bytes < 1:
            raise ProtocolViolation("welcome needs initial_window_bytes and max_message_bytes")
        self.welcome = welcome
        self._set_peer(welcome.revision, welcome.initial_window_bytes, welcome.max_message_bytes)
        return list(frames[1:])

    async def _cloud_handshake(self) -> list[tunnel_pb2.Frame]:
        frames = await self.transport.recv()
        if frames is None:
            raise _End(make_status(grpc.StatusCode.UNAVAILABLE, "edge closed before hello"))
        if not frames:
            raise ProtocolViolation("empty outer message")
        first = frames[0]
        kind = first.WhichOneof("kind")
        if first.stream_id != 0 or kind != "hello":
            raise ProtocolViolation(f"expected hello, got {kind or 'an empty frame'}")
        hello = first.hello
        common = set(hello.revisions) & set(self.config.revisions)
        if not common:
            status = make_status(grpc.StatusCode.UNAVAILABLE, "unsupported revision")
            await self._send_quietly([self._go_away(status)])
            raise _End(status)
        if hello.initial_window_bytes < 1 or hello.max_message_bytes < 1:
            raise ProtocolViolation("hello needs initial_window_bytes and max_message_bytes")
        refusal = self._accept_hello(hello) if self._accept_hello is not None else None
        if inspect.isawaitable(refusal):
            refusal = await refusal
        if refusal is not None:
            await self._send_quietly([self._go_away(refusal)])
            raise _End(refusal)
        self.hello = hello
        welcome = self.welcome
        welcome.revision = max(common)
        welcome.initial_window_bytes = self.config.initial_window_bytes
        welcome.max_message_bytes = self.config.max_message_bytes
        welcome.ping_interval.FromNanoseconds(int(self.config.ping_interval * 1e9))
        offered = set(self.config.capabilities)
        del welcome.capabilities[:]
        welcome.capabilities.extend(c for c in hello.capabilities if c in offered)
        self._set_peer(welcome.revision, hello.initial_window_bytes, hello.max_message_bytes)
        await self.transport.send([tunnel_pb2.Frame(stream_id=0, welcome=welcome)])
        return list(frames[1:])

    def _set_peer(self, revision: int, window: int, max_message: int) -> None:
        self.revision = revision
        self.peer_window = window
        self.peer_max_message = max_message

    @property
    def ping_interval(self) -> float:
        """Seconds between pings; the edge uses the cloud's value from the welcome."""
        if self.role is Role.EDGE and self.welcome.HasField("ping_interval"):
            seconds = self.welcome.ping_interval.ToNanoseconds() / 1e9
            if seconds > 0:
                return seconds
        return self.config.ping_interval

    # -- writing ---------------------------------------------------------------------------

    def enqueue(self, frame: tunnel_pb2.Frame) -> None:
        """Queues a frame; the writer sends everything queued as one outer message."""
        if self._closing and frame.WhichOneof("kind") != "go_away":
            return
        self._out.append(frame)
        if not self._out_event.is_set():
            self._out_event.set()

    async def _write_loop(self) -> None:
        transport = self.transport
        limit = self.config.max_outer_message_bytes
        try:
            while True:
                if not self._out:
                    if self._closing:
                        return
                    self._out_event.clear()
                    await self._out_event.wait()
                    continue
                batch, self._out = self._out, []
                if self.revision < 2:
                    for frame in batch:
                        await transport.send([frame])
                    continue
                if len(batch) == 1:
                    await transport.send(batch)
                    continue
                start = 0
                size = 0
                for index, frame in enumerate(batch):
                    cost = _frame_cost(frame)
                    if size and size + cost > limit:
                        await transport.send(batch[start:index])
                        start, size = index, 0
                    size += cost
                await transport.send(batch[start:])
        except TransportError as err:
            self._finish(make_status(err.code, err.details))
        except Exception:
            _log.exception("%s: writer failed", self.name)
            self._finish(make_status(grpc.StatusCode.INTERNAL, "tunnel writer failed"))

    async def _send_quietly(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        with contextlib.suppress(TransportError, TimeoutError):
            await asyncio.wait_for(self.transport.send(frames), timeout=2.0)

    def _go_away(self, status: status_pb2.Status, last: int | None = None) -> tunnel_pb2.Frame:
        go_away = tunnel_pb2.GoAway(
            last_stream_id=self._last_peer_id if last is None else last, status=status
        )
        return tunnel_pb2.Frame(stream_id=0, go_away=go_away)

    def _violation_status(self, message: str) -> status_pb2.Status:
        _log.warning("%s: protocol violation: %s", self.name, message)
        return make_status(grpc.StatusCode.INVALID_ARGUMENT, f"protocol violation: {message}")

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self, leftover: list[tunnel_pb2.Frame]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            for frame in leftover:
                self._on_frame(frame)
            while True:
                frames = await self.transport.recv()
                if frames is None:
                    if self.peer_go_away is not None or self._draining:
                        self._finish(make_status(grpc.StatusCode.OK, "peer drained the tunnel"))
                    else:
                        self._finish(
                            make_status(grpc.StatusCode.UNAVAILABLE, "peer closed the tunnel")
                        )
                    return
                self._last_rx = loop.time()
                if self._closing:
                    continue  # ending: keep reading until the peer's end, apply nothing
                if not frames:
                    raise ProtocolViolation("empty outer message")
                for frame in frames:
                    self._on_frame(frame)
                    if self._closing:
                        break
        except ProtocolViolation as err:
            status = self._violation_status(str(err))
            self.enqueue(self._go_away(status))
            self._finish(status)
        except _End as end:
            self._finish(end.status)
        except TransportError as err:
            self._finish(make_status(err.code, err.details))
        except Exception:
            _log.exception("%s: reader failed", self.name)
            self._finish(make_status(grpc.StatusCode.INTERNAL, "tunnel reader failed"))

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
        if kind == "ping":
            pong = tunnel_pb2.Pong(
                id=frame.ping.id, ping_sent_at=frame.ping.sent_at, sent_at=_timestamp_now()
            )
            self.enqueue(tunnel_pb2.Frame(stream_id=0, pong=pong))
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
        if code not in (_OK, _UNAVAILABLE):
            status = status_pb2.Status()
            status.CopyFrom(go_away.status)
            status.message = f"peer reported: {status.message}"
            raise _End(status)
        self.peer_go_away = go_away
        self.drain_requested.set()
        if self.role is Role.CLOUD:
            for stream in list(self._streams.values()):
                if stream.id > go_away.last_stream_id and isinstance(stream, CallerStream):
                    stream.finish(
                        Final(make_status(grpc.StatusCode.UNAVAILABLE, "edge is draining"), [])
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
            stream.cancel_handler(frame.cancel.reason or "cancelled by caller")
        elif kind == "window_update":
            stream.add_credit(frame.window_update.increment)
        else:
            raise ProtocolViolation(f"{kind} sent by the caller on stream {stream_id}")

    def _server_chunk(self, stream: ServerStream, chunk: tunnel_pb2.MessageChunk) -> None:
        if not stream.on_chunk(chunk):
            stream.close(
                make_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({chunk.message_size} vs. "
                    f"{self.config.max_message_bytes})",
                ),
                [],
            )
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()

    def _open_server_stream(self, stream_id: int, open_frame: tunnel_pb2.OpenStream) -> None:
        assert self._loop is not None
        deadline = None
        if open_frame.HasField("timeout"):
            deadline = self._loop.time() + open_frame.timeout.ToNanoseconds() / 1e9
        stream = ServerStream(self, stream_id, self.peer_window, open_frame, deadline)
        if self._draining or self._on_open is None:
            stream.close(make_status(grpc.StatusCode.UNAVAILABLE, "tunnel is draining"), [])
            return
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
        if stream_id % 2 == 0 or stream_id >= self._next_id:
            raise ProtocolViolation(f"{kind} for stream {stream_id}, never opened")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        assert isinstance(stream, CallerStream)
        if kind == "message":
            self._caller_chunk(stream, frame.message)
        elif kind == "headers":
            if stream.headers is not None:
                raise ProtocolViolation(f"second headers on stream {stream_id}")
            stream.set_headers(pairs_from_entries(frame.headers.metadata))
        elif kind == "close":
            self._caller_close(stream, frame.close)
        elif kind == "window_update":
            stream.add_credit(frame.window_update.increment)
        else:
            raise ProtocolViolation(f"{kind} sent by the server on stream {stream_id}")

    def _caller_chunk(self, stream: CallerStream, chunk: tunnel_pb2.MessageChunk) -> bool:
        if stream.on_chunk(chunk):
            return True
        stream.cancel(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"Received message larger than max ({chunk.message_size} vs. "
            f"{self.config.max_message_bytes})",
            "response message too large",
        )
        return False

    def _caller_close(self, stream: CallerStream, close: tunnel_pb2.CloseStream) -> None:
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
                make_status(grpc.StatusCode.UNAVAILABLE, "tunnel not accepting calls")
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
            open_frame.trace.CopyFrom(trace)
        folded = False
        if (
            first_message is not None
            and self.revision >= 2
            and len(first_message) <= min(stream.send_credit, self.config.chunk_bytes)
        ):
            open_frame.message.message_size = len(first_message)
            open_frame.message.data = first_message
            stream.send_credit -= len(first_message)
            folded = True
            if half_close:
                open_frame.half_close = True
                stream.half_closed = True
        self._streams[stream_id] = stream
        self._idle.clear()
        self.calls_started += 1
        self.enqueue(tunnel_pb2.Frame(stream_id=stream_id, open=open_frame))
        return stream, folded

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
        if self.role is Role.EDGE:
            self.ping()
        while True:
            await asyncio.sleep(interval)
            silent = self._loop.time() - self._last_rx
            if silent > 3 * interval:
                self._finish(
                    make_status(grpc.StatusCode.UNAVAILABLE, f"peer silent for {silent:.1f}s")
                )
                return
            if self.role is Role.EDGE:
                self.ping()
