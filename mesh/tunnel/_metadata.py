"""Conversions between gRPC metadata tuples and tunnel `MetadataEntry` lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import google.rpc.status_pb2 as status_pb2

from hplus.tunnel.v1 import tunnel_pb2

__all__ = [
    "DETAILS_KEY",
    "MetadataPairs",
    "entries_from_pairs",
    "pairs_from_entries",
    "status_from_trailers",
]

DETAILS_KEY = "grpc-status-details-bin"
"""Trailer that carries the serialized ``google.rpc.Status`` (the grpc-status convention)."""

MetadataPairs = list[tuple[str, str | bytes]]
"""Metadata as ``grpc.aio`` hands it to applications: ``(key, str | bytes)`` pairs."""


def entries_from_pairs(pairs: Iterable[Any] | None) -> list[tunnel_pb2.MetadataEntry]:
    """Converts ``(key, value)`` pairs to tunnel entries.

    Args:
        pairs: Metadata as ``grpc`` accepts it; ``str`` values are UTF-8 encoded, ``bytes``
            values (``-bin`` keys) are carried as they are.

    Returns:
        The entries, in order.
    """
    if not pairs:
        return []
    out = []
    for key, value in pairs:
        raw = value if isinstance(value, bytes) else str(value).encode()
        out.append(tunnel_pb2.MetadataEntry(key=str(key).lower(), value=raw))
    return out


def pairs_from_entries(entries: Sequence[tunnel_pb2.MetadataEntry]) -> MetadataPairs:
    """Converts tunnel entries back to ``grpc``-style pairs (``bytes`` for ``-bin`` keys)."""
    out: MetadataPairs = []
    for entry in entries:
        key = entry.key
        if key.endswith("-bin"):
            out.append((key, entry.value))
        else:
            out.append((key, entry.value.decode("utf-8", "surrogateescape")))
    return out


def status_from_trailers(
    code: int, details: str, trailers: Sequence[tunnel_pb2.MetadataEntry]
) -> status_pb2.Status:
    """Builds the `CloseStream.status` for a call's outcome.

    When the servicer attached a ``grpc-status-details-bin`` trailer whose code and message
    match the call's (what ``grpc_status.rpc_status.to_status`` produces), that full status,
    details included, is used; otherwise a status without details.
    """
    for entry in trailers:
        if entry.key == DETAILS_KEY:
            try:
                rich = status_pb2.Status.FromString(entry.value)
            except Exception:
                break
            if rich.code == code and rich.message == details:
                return rich
            break
    return status_pb2.Status(code=code, message=details)
