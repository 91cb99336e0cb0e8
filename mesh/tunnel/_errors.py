"""Exceptions of the tunnel engine and the statuses they carry."""

from __future__ import annotations

import google.rpc.status_pb2 as status_pb2
import grpc

__all__ = [
    "EndSession",
    "LimitExceeded",
    "ProtocolViolation",
    "TunnelClosed",
    "TunnelRefused",
    "make_status",
]


def make_status(code: grpc.StatusCode, message: str = "") -> status_pb2.Status:
    """Builds a ``google.rpc.Status`` without details.

    Args:
        code: The gRPC status code.
        message: The developer-facing message.

    Returns:
        The status message.
    """
    return status_pb2.Status(code=code.value[0], message=message)


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
