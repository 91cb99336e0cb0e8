"""Exceptions of the tunnel engine and the statuses they carry."""

from __future__ import annotations

import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

__all__ = [
    "ERROR_DOMAIN",
    "EndSession",
    "LimitExceeded",
    "ProtocolViolation",
    "TunnelClosed",
    "TunnelRefused",
    "make_status",
]


ERROR_DOMAIN = "tunnel.hplus"
"""``ErrorInfo.domain`` of the statuses the tunnel engine itself ends calls and tunnels with.

Reasons: ``TUNNEL_LOST`` (the outer connection broke), ``PEER_SILENT`` (no frame within the
liveness bound), ``PEER_CLOSED`` (the peer ended the outer stream without draining),
``DRAINING`` (a side is draining or shutting down), ``PROTOCOL_VIOLATION``,
``LIMIT_EXCEEDED`` (a tunnel-wide bound), ``NO_TUNNEL`` (no session accepts calls)."""


def make_status(code: grpc.StatusCode, message: str = "", reason: str = "") -> status_pb2.Status:
    """Builds a ``google.rpc.Status``, with an ``ErrorInfo`` when ``reason`` is given.

    Args:
        code: The gRPC status code.
        message: The developer-facing message.
        reason: ``ErrorInfo.reason`` (domain `ERROR_DOMAIN`); "" for no details.

    Returns:
        The status message.
    """
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
        status.details.append(packed)
    return status


def reason_of(status: status_pb2.Status) -> str:
    """The ``ErrorInfo.reason`` of a status the tunnel made ("" when it has none)."""
    info = error_details_pb2.ErrorInfo()
    for packed in status.details:
        if packed.Unpack(info):
            return info.reason
    return ""


class TunnelClosed(Exception):
    """The tunnel ended; ``status`` says why (OK for a clean drain)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(f"tunnel closed: {status.code} {status.message}")
        self.status = status


class TunnelRefused(TunnelClosed):
    """The cloud refused the tunnel during the handshake (or the outer call failed)."""


class ProtocolViolation(Exception):
    """The peer broke the tunnel protocol; the whole tunnel ends with INVALID_ARGUMENT."""


class LimitExceeded(Exception):
    """The peer exceeded a tunnel-wide bound; the whole tunnel ends with RESOURCE_EXHAUSTED."""


class EndSession(Exception):
    """Internal: the session must end with ``status`` (no protocol violation involved)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status
