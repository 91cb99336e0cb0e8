"""The frames a session queues for its peer, bounded in bytes, and the writer that sends them.

The writer sends everything queued since its last send as one outer message (coalescing comes
for free whenever frames queue up). The queue is bounded: producers of message data wait while
it holds ``max_outbound_bytes`` (`full`), and the reader stops reading the peer while replies
it caused pile up (`reader_must_wait`): ``max_queued_control_frames`` pongs and refusals, or
twice the byte bound. A peer that does not read therefore cannot make us queue without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import FRAME_OVERHEAD, TunnelConfig
from mesh.tunnel._transport import Transport

if TYPE_CHECKING:
    from mesh.tunnel._stream import _Stream

__all__ = ["Outbound", "frame_cost"]


def frame_cost(frame: tunnel_pb2.Frame) -> int:
    """The bytes a frame counts for in the outbound bound."""
    kind = frame.WhichOneof("kind")
    if kind == "message":
        return len(frame.message.data) + FRAME_OVERHEAD
    if kind in ("open", "close", "headers"):
        return frame.ByteSize()
    return FRAME_OVERHEAD


class Outbound:
    """The outbound queue and writer of one session.

    Args:
        transport: The outer stream to write to.
        config: Limits (outer message soft cap, byte bound, control-reply bound).
    """

    def __init__(self, transport: Transport, config: TunnelConfig) -> None:
        self._transport = transport
        self._limit = config.max_outer_message_bytes
        self._bound = config.max_outbound_bytes
        self._control_bound = config.max_queued_control_frames
        self.revision = 0
        """Protocol revision of the tunnel (1: one frame per outer message)."""
        self.closing = False
        """Set when the session ends: only ``go_away`` frames are still queued."""
        self._frames: list[tunnel_pb2.Frame] = []
        self._costs: list[int] = []
        self._controls = 0
        self.queued_bytes = 0
        """Bytes of frames queued or being sent."""
        self.queued_controls = 0
        """Control replies (pongs, refusals) queued or being sent."""
        self.data_bytes = 0
        """Payload bytes queued so far, control replies excepted (window updates answer
        them, so they widen the peer's flood budget)."""
        self.send_started: float | None = None
        """Event-loop time the outer message being sent was handed to the transport."""
        self._event = asyncio.Event()
        self._room_waiters: list[_Stream] = []
        self._reader_waiter: asyncio.Future[None] | None = None
        self._clock: Callable[[], float] = time.monotonic

    def put(
        self, frame: tunnel_pb2.Frame, cost: int = FRAME_OVERHEAD, control: bool = False
    ) -> None:
        """Queues a frame.

        Args:
            frame: The frame.
            cost: Its size in the bound.
            control: It answers a control frame of the peer (a pong, a refusal).
        """
        if self.closing and frame.WhichOneof("kind") != "go_away":
            return
        self._frames.append(frame)
        self._costs.append(cost)
        self.queued_bytes += cost
        if control:
            self._controls += 1
            self.queued_controls += 1
        else:
            self.data_bytes += cost
        if not self._event.is_set():
            self._event.set()

    @property
    def full(self) -> bool:
        """True while producers of message data must wait (see `wait_for_room`)."""
        return self.queued_bytes >= self._bound

    def wait_for_room(self, stream: _Stream) -> None:
        """Wakes ``stream``'s sender (`_Stream.wake_sender`) once the queue is below the bound."""
        self._room_waiters.append(stream)

    @property
    def reader_must_wait(self) -> bool:
        """True while the reader must not read more from the peer."""
        return self.queued_controls >= self._control_bound or self.queued_bytes >= 2 * self._bound

    async def wait_reader_room(self) -> None:
        """Waits until the reader may read again (or the session is closing)."""
        loop = asyncio.get_running_loop()
        while self.reader_must_wait and not self.closing:
            waiter = self._reader_waiter
            if waiter is None or waiter.done():
                waiter = self._reader_waiter = loop.create_future()
            await waiter

    def wake_all(self) -> None:
        """Wakes every waiting producer and the reader (the session is ending)."""
        waiters, self._room_waiters = self._room_waiters, []
        for stream in waiters:
            stream.wake_sender()
        waiter = self._reader_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._event.set()

    async def run(self) -> None:
        """Sends queued frames until the session is closing and the queue is empty.

        Raises:
            TransportError: The outer stream is gone.
        """
        limit = self._limit
        clock = self._clock = asyncio.get_running_loop().time
        transport = self._transport
        while True:
            if not self._frames:
                if self.closing:
                    return
                self._event.clear()
                await self._event.wait()
                continue
            batch, self._frames = self._frames, []
            costs, self._costs = self._costs, []
            controls, self._controls = self._controls, 0
            if len(batch) == 1:
                # The common case (a lone call's frame), without the extra coroutine of _send.
                self.send_started = clock()
                await transport.send(batch)
                self.send_started = None
                self.queued_bytes -= costs[0]
                if self._room_waiters or self._reader_waiter is not None:
                    self._after_send()
            elif self.revision < 2:
                for frame, cost in zip(batch, costs, strict=True):
                    await self._send([frame], cost)
            else:
                start = 0
                size = 0
                for index, cost in enumerate(costs):
                    if size and size + cost > limit:
                        await self._send(batch[start:index], size)
                        start, size = index, 0
                    size += cost
                await self._send(batch[start:], size)
            if controls:
                self.queued_controls -= controls
                if self._reader_waiter is not None:
                    self._wake_reader()

    async def _send(self, frames: Sequence[tunnel_pb2.Frame], cost: int) -> None:
        self.send_started = self._clock()
        await self._transport.send(frames)
        self.send_started = None
        self.queued_bytes -= cost
        if self._room_waiters or self._reader_waiter is not None:
            self._after_send()

    def _after_send(self) -> None:
        if self._room_waiters and self.queued_bytes < self._bound:
            waiters, self._room_waiters = self._room_waiters, []
            for stream in waiters:
                stream.wake_sender()
        if self._reader_waiter is not None:
            self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._reader_waiter
        if waiter is not None and not waiter.done() and not self.reader_must_wait:
            waiter.set_result(None)
