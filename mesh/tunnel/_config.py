"""Settings of one tunnel session, shared by the edge and the cloud side.

Every resource a peer can make us hold has a bound here (see the LIMITS section of
``tunnel.proto``). A side announces its own receive limits in its hello/welcome and obeys the
limits its peer announced; a peer can only lower what we send, never raise what we hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PEER_MAX_CONCURRENT_STREAMS",
    "MAX_WINDOW_BYTES",
    "MIN_WINDOW_BYTES",
    "SUPPORTED_REVISIONS",
    "TunnelConfig",
]

SUPPORTED_REVISIONS: tuple[int, ...] = (1, 2)
"""Protocol revisions this implementation speaks (see ``tunnel.proto``)."""

FRAME_OVERHEAD = 16
"""What a frame without payload costs in the outbound queue's accounting (and roughly on
the wire)."""

DEFAULT_PEER_MAX_CONCURRENT_STREAMS = 100
"""Streams we open at once toward a peer that announces no limit (releases before 1.2.0).

HTTP/2 recommends that ``SETTINGS_MAX_CONCURRENT_STREAMS`` be no smaller than 100, and an
older edge never refuses a stream, so 100 keeps today's behaviour for any sane load."""

MIN_WINDOW_BYTES = 1024
"""Smallest ``initial_window_bytes`` accepted from a peer: smaller windows would make us cut
messages into tiny chunks (CPU per byte) for no memory gain."""

MAX_WINDOW_BYTES = 2**31 - 1
"""Largest credit a stream may ever hold (HTTP/2's bound); more is a protocol violation."""


@dataclass(frozen=True, kw_only=True)
class TunnelConfig:
    """Limits and timers of a tunnel session.

    The same dataclass configures both sides. What a misbehaving peer can make this side
    hold is bounded by: ``max_inbound_outer_message_bytes`` per outer message read,
    ``max_concurrent_streams * initial_window_bytes + max_buffered_bytes`` of message data
    in at most ``max_queued_messages`` unread messages, twice ``max_outbound_bytes`` (plus
    ``max_queued_control_frames`` small replies) of frames to send, and
    ``max_control_frames_per_second`` frames that carry no data.
    """

    revisions: tuple[int, ...] = SUPPORTED_REVISIONS
    """Revisions offered (edge) or accepted (cloud); the highest common one is used."""

    initial_window_bytes: int = 256 * 1024
    """Per-stream credit, in bytes, granted to the peer for the data it sends us.

    It bounds what one stream buffers (partial message plus messages not yet read by the
    application): credit comes back only as the application consumes messages."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest inner message, in bytes, this side accepts (larger: RESOURCE_EXHAUSTED).

    The gRPC default; a hospital record or report page fits many times over."""

    max_concurrent_streams: int = 100
    """Streams the peer may have open toward us at once, announced in the hello/welcome
    (like HTTP/2's ``SETTINGS_MAX_CONCURRENT_STREAMS``). An open beyond it is refused with
    RESOURCE_EXHAUSTED on that stream only. 100 calls in flight to one hospital is far above
    the cloud's real load, and 100 windows bound the buffered bytes of a tunnel."""

    max_buffered_bytes: int = 8 * 1024 * 1024
    """Extra credit, in bytes, the whole tunnel may grant on top of the per-stream windows,
    so that messages larger than the window (up to ``max_message_bytes``) can arrive. A
    message that finds the budget in use waits (its sender stalls on that stream); the
    budget is never exceeded. Two messages of the largest size fit at once."""

    max_queued_messages: int = 16384
    """Messages received but not yet read by the application, over all streams of the
    tunnel. Each costs about 50 bytes of bookkeeping besides its data, so a window filled
    with tiny or empty messages (which need no credit) would otherwise cost many times the
    window. The stream whose message would exceed it ends with RESOURCE_EXHAUSTED."""

    max_outbound_bytes: int = 4 * 1024 * 1024
    """Bytes of frames queued for sending before producers wait (backpressure). While the
    queue holds twice this, the reader also stops reading the outer stream, so a peer that
    does not read cannot make us queue replies without bound."""

    max_queued_control_frames: int = 50
    """Replies to the peer's control frames (pongs, stream refusals) queued before the reader
    stops reading until they are sent (grpc-go stops reading at 50 as well)."""

    max_control_frames_per_second: int = 1000
    """Frames that carry no data (pings, pongs, window updates, empty chunks, cancels of
    live streams) the peer may send per second, plus one per KiB of data we sent in that
    second (window updates answer our data); frames for streams that already ended have a
    budget of their own, plus 16 per stream that ended in that second (frames cross an end
    in flight). Past either the tunnel ends with RESOURCE_EXHAUSTED, as HTTP/2 servers do
    against ping, empty-frame and rapid-reset (open and cancel) floods. A well-behaved peer
    sends a ping every few seconds, one window update per half window of data, and cancels
    a handful of calls a second."""

    max_metadata_bytes: int = 16 * 1024
    """Largest request headers of an ``open`` (method, metadata, trace context) and largest
    response headers or trailers (with the status) of a stream, in bytes; more ends that
    stream with RESOURCE_EXHAUSTED. gRPC's own default limit is 8-16 KiB."""

    max_id_bytes: int = 128
    """Largest identifier in a hello/welcome (hospital id, edge id, versions, session id,
    node id); they go into logs and presence records shown on every node."""

    max_names: int = 256
    """Most entries of each list in a hello/welcome (revisions, services, capabilities,
    warnings); an edge serves about ten services."""

    max_name_bytes: int = 256
    """Largest service name, capability name or method name, in bytes."""

    max_text_bytes: int = 1024
    """Largest free text from the peer (a warning, a go-away or cancel reason); a longer one
    in a hello/welcome is refused, elsewhere it is cut to this length before it is logged."""

    chunk_bytes: int = 64 * 1024
    """Largest chunk of message data put in one frame."""

    max_outer_message_bytes: int = 1024 * 1024
    """Soft cap on the frame bytes coalesced into one outer message (sending)."""

    max_inbound_outer_message_bytes: int = 2 * 1024 * 1024
    """Largest outer message accepted from the peer (the gRPC receive limit of the tunnel's
    server port and of the edge's channel). Senders coalesce up to
    ``max_outer_message_bytes`` plus one frame, so twice that leaves room; it also bounds
    the frames one outer message can make us parse at once."""

    ping_interval: float = 5.0
    """Seconds between pings (edge) and the unit of the liveness bound (three intervals):
    silence for three intervals means the peer is dead, and an outer message that waits three
    intervals to be sent means the peer does not read (RESOURCE_EXHAUSTED)."""

    handshake_timeout: float = 10.0
    """Seconds the cloud waits for ``hello`` and the edge waits for ``welcome``."""

    drain_grace: float = 30.0
    """Seconds a draining side waits for in-flight streams before cancelling them."""

    drain_reconnect_spread: float = 10.0
    """Cloud: a draining node tells each edge to wait a random share of this many seconds
    (``go_away.reconnect_after``) before reconnecting, so 2,000 edges do not return at once."""

    capabilities: tuple[str, ...] = field(default_factory=tuple)
    """Optional features offered (edge) or accepted (cloud)."""

    def __post_init__(self) -> None:
        if not self.revisions or any(r < 1 for r in self.revisions):
            raise ValueError("revisions must be a non-empty tuple of positive integers")
        if not MIN_WINDOW_BYTES <= self.initial_window_bytes <= MAX_WINDOW_BYTES:
            raise ValueError(
                f"initial_window_bytes must be in [{MIN_WINDOW_BYTES}, {MAX_WINDOW_BYTES}]"
            )
        if not 1 <= self.max_message_bytes < 2**32:
            raise ValueError("max_message_bytes must be in [1, 4 GiB)")
        if not 1 <= self.max_concurrent_streams < 2**32:
            raise ValueError("max_concurrent_streams must be in [1, 2**32)")
        if self.max_buffered_bytes < self.max_message_bytes:
            raise ValueError("max_buffered_bytes must be >= max_message_bytes")
        if not 1 <= self.chunk_bytes <= self.max_outer_message_bytes:
            raise ValueError("chunk_bytes must be in [1, max_outer_message_bytes]")
        if self.max_outbound_bytes < self.max_outer_message_bytes:
            raise ValueError("max_outbound_bytes must be >= max_outer_message_bytes")
        if self.max_queued_messages < 1:
            raise ValueError("max_queued_messages must be >= 1")
        if self.max_queued_control_frames < 1 or self.max_control_frames_per_second < 1:
            raise ValueError("max_queued_control_frames and max_control_frames_per_second >= 1")
        if min(self.max_id_bytes, self.max_names, self.max_name_bytes, self.max_text_bytes) < 1:
            raise ValueError("max_id_bytes, max_names, max_name_bytes, max_text_bytes >= 1")
        if self.max_metadata_bytes < 1024:
            raise ValueError("max_metadata_bytes must be >= 1024")
        largest_frame = self.chunk_bytes + 2 * self.max_metadata_bytes + 1024
        if self.max_inbound_outer_message_bytes < self.max_outer_message_bytes + largest_frame:
            raise ValueError(
                "max_inbound_outer_message_bytes must hold max_outer_message_bytes plus the "
                "largest frame (chunk_bytes + metadata)"
            )
        if self.max_outer_message_bytes > 3 * 1024 * 1024:
            raise ValueError("max_outer_message_bytes must stay below gRPC's 4 MiB default")
        if self.ping_interval <= 0 or self.handshake_timeout <= 0 or self.drain_grace < 0:
            raise ValueError("ping_interval and handshake_timeout must be > 0, drain_grace >= 0")
        if self.drain_reconnect_spread < 0:
            raise ValueError("drain_reconnect_spread must be >= 0")
