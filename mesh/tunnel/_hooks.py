"""Interceptor-style hooks run around every inner call, on either side of the tunnel."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._metadata import MetadataPairs

__all__ = ["CallHook", "CallInfo", "HookRejection"]


@dataclass(slots=True)
class CallInfo:
    """One inner call, as hooks see it."""

    method: str
    """Full method name, ``/package.Service/Method``."""
    metadata: MetadataPairs
    """Request headers; on the cloud side a hook may change them before the call is sent."""
    trace: tunnel_pb2.TraceContext | None
    """W3C trace context; a cloud hook may set it, an edge hook reads the caller's."""
    hospital_id: str
    """The hospital at the other (cloud) or this (edge) end of the tunnel."""
    session: str
    """Name of the tunnel session carrying the call (for logs)."""
    started: float
    """Event-loop time when the call started."""
    timeout: float | None = None
    """Seconds the caller had left when the call started, if it had a deadline."""
    contract_release: str = ""
    """The contract release the edge announced in its hello (cloud side)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Free slot for a hook to keep per-call state between ``on_start`` and ``on_end``."""


class HookRejection(Exception):
    """Raised by `CallHook.on_start` to refuse a call with a status (e.g. PERMISSION_DENIED)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class CallHook:
    """Base class of call hooks; override what you need.

    Hooks run synchronously on the event loop, in order for ``on_start`` and in reverse order
    for ``on_end``. They must be fast; a hook that needs I/O should keep a cache. Typical
    uses: put or read trace context, count calls and time them, authorize calls.
    """

    def on_start(self, call: CallInfo) -> None:
        """Runs before the call is sent (cloud) or before the servicer runs (edge).

        Raises:
            HookRejection: The call must not proceed; it ends with the given status.
        """

    def on_end(self, call: CallInfo, code: grpc.StatusCode, details: str) -> None:
        """Runs once the call has ended, with its final status."""

    def on_failed(
        self, call: CallInfo, code: grpc.StatusCode, details: str, trailers: MetadataPairs
    ) -> None:
        """Runs after `on_end` for a call that did not end OK (cloud side).

        It gets the call's trailers (``grpc-status-details-bin`` among them when the
        status had details), so a hook can read why it failed at no cost to calls that succeed.
        """

    def on_message(self, call: CallInfo, outgoing: bool, data: bytes) -> None:
        """Sees each serialized message of the call (cloud side).

        Requests as they are sent (``outgoing``), responses as they arrive. Called only for
        hooks that override it, so hooks that do not care cost nothing per message. Must not
        raise, and should sample before doing anything costly.
        """
