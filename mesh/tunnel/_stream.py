"""One inner call (a stream) as the session engine sees it, on either side.

A stream owns its flow-control state in both directions, reassembles inbound chunks into
messages and queues them for its consumer. The caller side (`CallerStream`) also collects the
response headers and the final status; the server side (`ServerStream`) knows the method,
metadata and deadline of the call it serves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import google.rpc.status_pb2 as status_pb2
import grpc

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import FRAME_OVERHEAD, MAX_WINDOW_BYTES
from mesh.tunnel._errors import ProtocolViolation, make_status
from mesh.tunnel._metadata import pairs_from_entries

if TYPE_CHECKING:
    from mesh.tunnel._session import Session

__all__ = ["CallerStream", "Final", "ServerStream", "StreamEnded"]


class StreamEnded(Exception):
    """The stream ended while the application was still sending or reading."""


class Final:
    """How a call ended, from the caller's point of view.

    Only Python values are kept (code, message, trailers): a received status shares the
    memory of its whole outer message.
    """

    __slots__ = ("code", "details", "trailers")

    def __init__(
        self,
        status: status_pb2.Status,
        trailers: list[tuple[str, str | bytes]],
    ) -> None:
        self.code = _code_of(status.code)
        self.details = status.message
        if status.details and not any(k == _DETAILS_KEY for k, _ in trailers):
            # The tunnel's own statuses carry an ErrorInfo: callers decode it like any
            # server's (mesh.errors.from_call reads this trailer).
            trailers = [*trailers, (_DETAILS_KEY, status.SerializeToString())]
        self.trailers = trailers


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_DETAILS_KEY = "grpc-status-details-bin"


def _code_of(value: int) -> grpc.StatusCode:
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


class _Stream:
    """State shared by both ends of a stream.

    Receiving, the stream keeps ``granted + held + to_return == window + extra``: ``granted``
    is the credit the peer still has, ``held`` the bytes buffered (partial message and
    messages not yet consumed), ``to_return`` consumed bytes not yet given back, ``extra``
    credit borrowed from the tunnel's large-message budget. Credit goes back to the peer
    only as the application consumes messages, so ``held`` never exceeds the window plus
    what the budget lent.
    """

    def __init__(self, session: Session, stream_id: int, send_credit: int) -> None:
        self.session = session
        self.id = stream_id
        self.send_credit = send_credit
        self.ended = False
        self._credit_waiter: asyncio.Future[None] | None = None
        self._inbox: deque[bytes] = deque()
        self._inbox_waiter: asyncio.Future[None] | None = None
        self.inbox_closed = False
        self._window = session.config.initial_window_bytes
        self._granted = self._window
        self._held = 0
        self._to_return = 0
        self._extra = 0
        self._counted = True
        self.wants_extra = 0
        """Extra credit this stream waits for from the tunnel's large-message budget."""
        self._partial: bytearray | None = None
        self._partial_size = 0

    # -- sending -----------------------------------------------------------------------------

    async def _wait_credit(self) -> None:
        waiter = self._credit_waiter
        if waiter is None or waiter.done():  # concurrent senders share one waiter
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiter = waiter
        await asyncio.shield(waiter)

    def add_credit(self, increment: int) -> None:
        """Applies a window update from the peer.

        Raises:
            ProtocolViolation: The credit would exceed 2^31-1.
        """
        credit = self.send_credit + increment
        if credit > MAX_WINDOW_BYTES:
            raise ProtocolViolation(f"stream {self.id}: window_update overflows the credit")
        self.send_credit = credit
        waiter = self._credit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_sender(self) -> None:
        """Wakes a sender waiting for credit or for room in the session's outbound queue."""
        waiter = self._credit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def send_data(self, data: bytes) -> None:
        """Sends one message as chunks, waiting for credit and for room in the outbound queue.

        Raises:
            StreamEnded: The stream ended before the whole message was sent.
        """
        session = self.session
        size = len(data)
        chunk_limit = session.config.chunk_bytes
        outbound = session.outbound
        offset = 0
        first = True
        while first or offset < size:
            if self.ended:
                raise StreamEnded
            if size and self.send_credit <= 0:
                await self._wait_credit()
                continue
            if outbound.full:
                outbound.wait_for_room(self)
                await self._wait_credit()
                continue
            take = min(size - offset, self.send_credit, chunk_limit)
            chunk = tunnel_pb2.MessageChunk(
                message_size=size if first else 0, data=data[offset : offset + take]
            )
            self.send_credit -= take
            offset += take
            first = False
            outbound.put(tunnel_pb2.Frame(stream_id=self.id, message=chunk), take + FRAME_OVERHEAD)
        if self.ended:
            raise StreamEnded

    def wake(self) -> None:
        """Wakes every waiter (the stream ended or received something)."""
        for waiter in (self._credit_waiter, self._inbox_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- receiving ---------------------------------------------------------------------------

    def on_chunk(self, chunk: tunnel_pb2.MessageChunk) -> bool:
        """Takes one inbound chunk.

        Returns:
            False when the chunk starts a message larger than this side's limit.

        Raises:
            ProtocolViolation: The chunk exceeds the credit or the announced message size.
        """
        data = chunk.data
        length = len(data)
        if length > self._granted:
            raise ProtocolViolation(f"stream {self.id}: chunk of {length} B exceeds credit")
        self._granted -= length
        partial = self._partial
        if partial is None:
            size = chunk.message_size
            if size > self.session.config.max_message_bytes:
                return False
            if length > size:
                raise ProtocolViolation(f"stream {self.id}: chunk longer than message_size")
            self._held += length
            if length == size:
                self._deliver(data)
                return True
            self._partial = bytearray(data)
            self._partial_size = size
            self._credit_for_rest(size - length)
            return True
        if len(partial) + length > self._partial_size:
            raise ProtocolViolation(f"stream {self.id}: chunk longer than message_size")
        partial += data
        self._held += length
        if len(partial) == self._partial_size:
            self._partial = None
            self._deliver(bytes(partial))
        return True

    def _credit_for_rest(self, rest: int) -> None:
        # The peer must be able to finish the message it started: what it still has to send
        # may exceed its credit when the message is larger than the window (or queued
        # messages hold part of it). Give back consumed bytes first, then borrow the rest.
        if rest <= self._granted:
            return
        self._give_back()
        if rest > self._granted:
            self.wants_extra = rest - self._granted
            self.session.budget.borrow(self)

    def lend(self, amount: int) -> None:
        """Receives ``amount`` bytes of extra credit from the session's budget (see `borrow`)."""
        self.wants_extra = 0
        self._extra += amount
        self._send_credit(amount)

    def release(self) -> int:
        """The stream left the session: stop counting its unread messages, hand back credit.

        Returns:
            The bytes it had borrowed from the large-message budget.
        """
        if self._counted:
            self._counted = False
            if self._inbox:
                self.session.budget.queued_messages -= len(self._inbox)
        extra, self._extra = self._extra, 0
        self.wants_extra = 0
        return extra

    @property
    def mid_message(self) -> bool:
        """True while a message is partly received."""
        return self._partial is not None

    def _deliver(self, message: bytes) -> None:
        budget = self.session.budget
        if budget.queued_messages >= budget.max_queued_messages:
            reason = f"more than {budget.max_queued_messages} received messages are not read yet"
            self.session.exhaust_stream(self, reason, "unread")
            return
        budget.queued_messages += 1
        self._inbox.append(message)
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close_inbox(self) -> None:
        """No more inbound messages will arrive."""
        self.inbox_closed = True
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _consumed(self, length: int) -> None:
        self._held -= length
        self._to_return += length
        if self._extra and self._partial is None:
            # Borrowed credit is taken back, not returned: the window shrinks to normal.
            cut = min(self._extra, self._to_return)
            self._extra -= cut
            self._to_return -= cut
            self.session.budget.repay(cut)
        if self._to_return * 2 >= self._window:
            self._give_back()

    def _give_back(self) -> None:
        amount, self._to_return = self._to_return, 0
        self._send_credit(amount)

    def _send_credit(self, amount: int) -> None:
        if amount <= 0 or self.ended or self.inbox_closed:
            return  # the peer sends no more data on this stream
        self._granted += amount
        self.session.outbound.put(
            tunnel_pb2.Frame(
                stream_id=self.id, window_update=tunnel_pb2.WindowUpdate(increment=amount)
            )
        )

    def drop_inbox(self) -> None:
        """Forgets unread messages and a partial one (nobody will read them any more)."""
        if self._counted:
            self.session.budget.uncount_messages(len(self._inbox))
        self._inbox.clear()
        self._partial = None
        self._held = 0

    def take(self) -> bytes | None:
        """Returns the next queued inbound message without waiting, if there is one."""
        if not self._inbox:
            return None
        message = self._inbox.popleft()
        if self._counted:
            self.session.budget.queued_messages -= 1
        self._consumed(len(message))
        return message

    async def receive(self) -> bytes | None:
        """Waits for the next inbound message.

        Returns:
            The message, or ``None`` once no more will arrive (the stream ended or the peer
            finished sending).
        """
        while True:
            message = self.take()
            if message is not None:
                return message
            if self.inbox_closed or self.ended:
                return None
            waiter = self._inbox_waiter
            if waiter is None or waiter.done():  # concurrent readers share one waiter
                waiter = asyncio.get_running_loop().create_future()
                self._inbox_waiter = waiter
            await asyncio.shield(waiter)


class CallerStream(_Stream):
    """The caller's end of a stream (cloud side in revision 2)."""

    def __init__(self, session: Session, stream_id: int, send_credit: int) -> None:
        super().__init__(session, stream_id, send_credit)
        self.headers: list[tuple[str, str | bytes]] | None = None
        self.final: Final | None = None
        self.half_closed = False
        self.cancelled_locally = False
        self._done: asyncio.Future[Final] | None = None
        self._headers_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.on_done: list[Callable[[], None]] = []
        self.waiting_open: tunnel_pb2.OpenStream | None = None
        """The ``open`` held back while the peer's concurrent-stream limit is reached."""
        self.deadline: float | None = None
        """Event-loop time of the call's deadline (to recompute a held-back open's timeout)."""
        self.half_close_after_open = False

    def set_headers(self, headers: list[tuple[str, str | bytes]]) -> None:
        """Records the response headers (once)."""
        if self.headers is None:
            self.headers = headers
            waiter = self._headers_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_headers(self) -> list[tuple[str, str | bytes]]:
        """Waits for the response headers; empty if the call ends or a message comes first."""
        while self.headers is None:
            if self._inbox or self.final is not None:
                return []
            waiter = self._headers_waiter
            if waiter is None or waiter.done():  # concurrent callers share one waiter
                waiter = asyncio.get_running_loop().create_future()
                self._headers_waiter = waiter
            await asyncio.shield(waiter)
        return self.headers

    def finish(self, final: Final) -> None:
        """Ends the stream locally with ``final`` (idempotent: the first end wins)."""
        if self.final is not None:
            return
        self.final = final
        self.ended = True
        self.inbox_closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.session.forget(self.id)
        if self._done is not None and not self._done.done():
            self._done.set_result(final)
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.wake()
        callbacks, self.on_done = self.on_done, []
        for callback in callbacks:
            callback()

    async def wait_done(self) -> Final:
        """Waits until the call has ended and returns how."""
        if self.final is not None:
            return self.final
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._done)

    def half_close(self) -> None:
        """Tells the server no more request messages follow."""
        if self.half_closed or self.ended:
            return
        self.half_closed = True
        if self.waiting_open is not None:
            self.half_close_after_open = True  # sent right after the open
            return
        self.session.outbound.put(
            tunnel_pb2.Frame(stream_id=self.id, half_close=tunnel_pb2.HalfClose())
        )

    def cancel(self, code: grpc.StatusCode, details: str, reason: str) -> None:
        """Abandons the call: sends ``cancel`` and ends locally with ``code``."""
        if self.final is not None:
            return
        self.cancelled_locally = code is grpc.StatusCode.CANCELLED
        if not self.session.is_closed and self.waiting_open is None:
            self.session.outbound.put(
                tunnel_pb2.Frame(stream_id=self.id, cancel=tunnel_pb2.Cancel(reason=reason))
            )
        self.finish(Final(make_status(code, details), []))


class ServerStream(_Stream):
    """The server's end of a stream (edge side in revision 2)."""

    def __init__(
        self,
        session: Session,
        stream_id: int,
        send_credit: int,
        open_frame: tunnel_pb2.OpenStream,
        deadline: float | None,
    ) -> None:
        super().__init__(session, stream_id, send_credit)
        self.method = open_frame.method
        # Python values, not the frame: a kept frame would keep its whole outer message.
        self.metadata = pairs_from_entries(open_frame.metadata) if open_frame.metadata else []
        """Request headers, as ``grpc`` gives them to servicers."""
        self.trace: tunnel_pb2.TraceContext | None = None
        """The caller's trace context, if it sent one."""
        if open_frame.HasField("trace"):
            self.trace = tunnel_pb2.TraceContext()
            self.trace.CopyFrom(open_frame.trace)
        self.deadline = deadline
        self.headers_sent = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cancel_reason = ""

    def send_headers(self, metadata: list[tunnel_pb2.MetadataEntry]) -> None:
        """Sends the response headers (at most once)."""
        if self.headers_sent or self.ended:
            return
        self.headers_sent = True
        frame = tunnel_pb2.Frame(
            stream_id=self.id, headers=tunnel_pb2.ResponseHeaders(metadata=metadata)
        )
        self.session.outbound.put(frame, frame.ByteSize())

    def close(
        self,
        status: status_pb2.Status,
        trailers: list[tunnel_pb2.MetadataEntry],
        *,
        headers: list[tunnel_pb2.MetadataEntry] | None = None,
        message: bytes | None = None,
    ) -> None:
        """Ends the call with ``status``; headers and the last message may be folded in."""
        if self.ended:
            return
        close = tunnel_pb2.CloseStream(status=status, trailers=trailers)
        if headers is not None and not self.headers_sent:
            self.headers_sent = True
            close.headers.metadata.extend(headers)
        if message is not None:
            close.message.message_size = len(message)
            close.message.data = message
            self.send_credit -= len(message)
        self.session.outbound.put(
            tunnel_pb2.Frame(stream_id=self.id, close=close), close.ByteSize()
        )
        self.end()

    def end(self) -> None:
        """Forgets the stream; later frames for it are ignored."""
        if self.ended:
            return
        self.ended = True
        self.inbox_closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.session.forget(self.id)
        if self._inbox or self._partial is not None:
            self.drop_inbox()
        self.wake()

    def cancel_handler(self, reason: str) -> None:
        """Ends the stream without a close frame and cancels its handler task."""
        self.cancel_reason = reason
        self.end()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def expire(self) -> None:
        """The call's deadline passed: close with DEADLINE_EXCEEDED, cancel the handler."""
        self.timer = None
        if self.ended:
            return
        self.close(make_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), [])
        self.cancel_reason = "deadline exceeded"
        if self.task is not None and not self.task.done():
            self.task.cancel()
