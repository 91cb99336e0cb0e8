"""What the peer can make one tunnel hold, or do without sending data: counted and bounded.

Three accounts per tunnel (limits in `TunnelConfig`):

* frames that carry no data, per second: pings, pongs, window updates, empty chunks and
  cancels of live streams (open-and-cancel bursts are the "rapid reset" attack) in one count,
  frames for streams that already ended in another (each stream that ends allows a few that
  crossed its end in flight); a flood ends the tunnel with RESOURCE_EXHAUSTED. Refused opens
  are counted too: a caller that keeps ignoring ``max_concurrent_streams`` is a protocol
  violation;
* credit lent beyond the per-stream windows so that messages larger than the window can
  arrive (never more than ``max_buffered_bytes``; a stream that finds it in use waits);
* messages received and not yet read by the application (``max_queued_messages``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mesh.tunnel._config import TunnelConfig
from mesh.tunnel._errors import LimitExceeded, ProtocolViolation
from mesh.tunnel._outbound import Outbound

if TYPE_CHECKING:
    from mesh.tunnel._stream import _Stream

__all__ = ["CROSSING_FRAMES", "PeerBudget"]

CROSSING_FRAMES = 16
"""Frames without data that a stream which ended may still draw (they crossed its end in
flight: chunks, window updates, a half-close or a cancel); allowed on top of the flood budget
for every stream that ended in the same second."""


class PeerBudget:
    """The accounts of one tunnel.

    Args:
        config: The limits.
        outbound: The session's outbound queue (window updates answer the data we queue, so
            our own data widens the flood budget).
    """

    def __init__(self, config: TunnelConfig, outbound: Outbound) -> None:
        self._config = config
        self._outbound = outbound
        self._interval_start = 0.0
        self._idle_frames = 0
        self._crossing_frames = 0
        self._refusals = 0
        self._interval_data = 0
        self._interval_ended = 0
        self.lent = 0
        """Bytes of credit lent beyond the windows, now."""
        self._borrowers: dict[int, _Stream] = {}
        self.queued_messages = 0
        """Messages received and not yet read, over all live streams (streams count their
        own messages in and out of it)."""
        self.max_queued_messages = config.max_queued_messages

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._interval_start >= 1.0:
            self._interval_start = now
            self._idle_frames = 0
            self._crossing_frames = 0
            self._refusals = 0
            self._interval_data = self._outbound.data_bytes
            self._interval_ended = 0

    # -- frames without data -------------------------------------------------------------

    def idle_frame(self, what: str) -> None:
        """Counts a frame that carries no data (``what`` names it for the message).

        Raises:
            LimitExceeded: More than the flood budget arrived in the current second.
        """
        self._tick()
        self._idle_frames += 1
        budget = self._config.max_control_frames_per_second
        if self._idle_frames > budget and self._idle_frames > budget + (
            (self._outbound.data_bytes - self._interval_data) >> 10
        ):
            self._flood(self._idle_frames, what)

    def crossing_frame(self, what: str) -> None:
        """Counts a frame for a stream that has ended (it may have crossed the end in flight).

        Raises:
            LimitExceeded: More than the flood budget and the allowance of the streams that
                ended in the current second.
        """
        self._tick()
        self._crossing_frames += 1
        budget = self._config.max_control_frames_per_second
        if self._crossing_frames > budget + CROSSING_FRAMES * self._interval_ended:
            self._flood(self._crossing_frames, what)

    def _flood(self, count: int, what: str) -> None:
        budget = self._config.max_control_frames_per_second
        raise LimitExceeded(
            f"flood: more than {count - 1} frames without data in one second "
            f"(last: {what}; limit max_control_frames_per_second={budget})"
        )

    def refusal(self) -> None:
        """Counts an open refused for ``max_concurrent_streams``.

        Raises:
            ProtocolViolation: More refusals in the current second than the limit itself.
        """
        self._tick()
        self._refusals += 1
        limit = self._config.max_concurrent_streams
        if self._refusals > limit:
            raise ProtocolViolation(
                f"the caller keeps opening streams beyond max_concurrent_streams ({limit})"
            )

    def stream_ended(self, stream: _Stream) -> None:
        """A stream left the session: release what it held, allow its crossing frames."""
        self._interval_ended += 1  # counted into the current second at its next tick
        if stream.wants_extra:
            self._borrowers.pop(stream.id, None)
        lent = stream.release()
        if lent:
            self.repay(lent)

    # -- credit for large messages ---------------------------------------------------------

    def borrow(self, stream: _Stream) -> None:
        """Lends ``stream.wants_extra`` bytes of credit beyond its window.

        At once when the budget has room, else as soon as it has (first come, first served).
        """
        free = self._config.max_buffered_bytes - self.lent
        if not self._borrowers and stream.wants_extra <= free:
            self.lent += stream.wants_extra
            stream.lend(stream.wants_extra)
        else:
            self._borrowers[stream.id] = stream

    def repay(self, amount: int) -> None:
        """Takes ``amount`` bytes of lent credit back; lends to waiting streams in turn."""
        self.lent -= amount
        budget = self._config.max_buffered_bytes
        while self._borrowers:
            stream = next(iter(self._borrowers.values()))
            if stream.wants_extra > budget - self.lent:
                return
            del self._borrowers[stream.id]
            self.lent += stream.wants_extra
            stream.lend(stream.wants_extra)

    # -- unread messages -------------------------------------------------------------------

    def uncount_messages(self, count: int) -> None:
        """``count`` received messages were read (or dropped)."""
        self.queued_messages -= count
