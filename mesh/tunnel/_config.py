"""Settings of one tunnel session, shared by the edge and the cloud side."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SUPPORTED_REVISIONS", "TunnelConfig"]

SUPPORTED_REVISIONS: tuple[int, ...] = (1, 2)
"""Protocol revisions this implementation speaks (see ``tunnel.proto``)."""


@dataclass(frozen=True, kw_only=True)
class TunnelConfig:
    """Limits and timers of a tunnel session.

    The same dataclass configures both sides; a side announces its own receive limits in its
    hello/welcome and obeys the limits its peer announced.
    """

    revisions: tuple[int, ...] = SUPPORTED_REVISIONS
    """Revisions offered (edge) or accepted (cloud); the highest common one is used."""

    initial_window_bytes: int = 256 * 1024
    """Per-stream credit, in bytes, granted to the peer for the data it sends us."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest inner message, in bytes, this side accepts (larger: RESOURCE_EXHAUSTED)."""

    chunk_bytes: int = 64 * 1024
    """Largest chunk of message data put in one frame."""

    max_outer_message_bytes: int = 1024 * 1024
    """Soft cap on the frame bytes coalesced into one outer message."""

    ping_interval: float = 5.0
    """Seconds between pings (edge) and the unit of the liveness bound (three intervals)."""

    handshake_timeout: float = 10.0
    """Seconds the cloud waits for ``hello`` and the edge waits for ``welcome``."""

    drain_grace: float = 30.0
    """Seconds a draining side waits for in-flight streams before cancelling them."""

    capabilities: tuple[str, ...] = field(default_factory=tuple)
    """Optional features offered (edge) or accepted (cloud)."""

    def __post_init__(self) -> None:
        if not self.revisions or any(r < 1 for r in self.revisions):
            raise ValueError("revisions must be a non-empty tuple of positive integers")
        if not 1024 <= self.initial_window_bytes < 2**31:
            raise ValueError("initial_window_bytes must be in [1 KiB, 2 GiB)")
        if not 1 <= self.max_message_bytes < 2**32:
            raise ValueError("max_message_bytes must be in [1, 4 GiB)")
        if not 1 <= self.chunk_bytes <= self.max_outer_message_bytes:
            raise ValueError("chunk_bytes must be in [1, max_outer_message_bytes]")
        if self.max_outer_message_bytes > 3 * 1024 * 1024:
            raise ValueError("max_outer_message_bytes must stay below gRPC's 4 MiB default")
        if self.ping_interval <= 0 or self.handshake_timeout <= 0 or self.drain_grace < 0:
            raise ValueError("ping_interval and handshake_timeout must be > 0, drain_grace >= 0")
