"""Size checks of what a peer sends, done before any work is done with it.

Each check returns ``None`` or one sentence naming the field and its limit, which becomes the
message of an INVALID_ARGUMENT (handshake) or RESOURCE_EXHAUSTED (stream) status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, TunnelConfig

__all__ = [
    "MAX_PING_INTERVAL",
    "MIN_PING_INTERVAL",
    "clip",
    "hello_problem",
    "metadata_size",
    "welcome_problem",
]

MIN_PING_INTERVAL = 0.01
"""Shortest ping interval an edge accepts from a welcome (100 pings a second at most)."""

MAX_PING_INTERVAL = 600.0
"""Longest ping interval an edge accepts (dead peers must still be noticed)."""


def _utf8_len(text: str) -> int:
    # ASCII is the common case; len() is exact for it and far cheaper than encoding.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _check_text(field: str, value: str, limit: int) -> str | None:
    size = _utf8_len(value)
    if size > limit:
        return f"{field}: {size} bytes exceeds the limit of {limit}"
    return None


def _check_list(field: str, values: Sequence[str], count_limit: int, size_limit: int) -> str | None:
    if len(values) > count_limit:
        return f"{field}: {len(values)} entries exceeds the limit of {count_limit}"
    for index, value in enumerate(values):
        problem = _check_text(f"{field}[{index}]", value, size_limit)
        if problem is not None:
            return problem
    return None


def _first(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p is not None), None)


def _check_window(field: str, value: int) -> str | None:
    if not MIN_WINDOW_BYTES <= value <= MAX_WINDOW_BYTES:
        return f"{field}: {value} is outside [{MIN_WINDOW_BYTES}, {MAX_WINDOW_BYTES}]"
    return None


def hello_problem(hello: tunnel_pb2.Hello, config: TunnelConfig) -> str | None:
    """Checks every field of an edge's hello against the limits of ``config``.

    Returns:
        ``None``, or the first field over its limit, e.g.
        ``"hello.edge_id: 20971520 bytes exceeds the limit of 128"``.
    """
    ids = config.max_id_bytes
    return _first(
        (
            _check_text("hello.hospital_id", hello.hospital_id, ids),
            _check_text("hello.edge_id", hello.edge_id, ids),
            _check_text("hello.software_version", hello.software_version, ids),
            _check_text("hello.contract_release", hello.contract_release, ids),
            None
            if len(hello.revisions) <= config.max_names
            else f"hello.revisions: {len(hello.revisions)} entries exceeds the limit of "
            f"{config.max_names}",
            _check_list("hello.services", hello.services, config.max_names, config.max_name_bytes),
            _check_list(
                "hello.capabilities", hello.capabilities, config.max_names, config.max_name_bytes
            ),
            _check_window("hello.initial_window_bytes", hello.initial_window_bytes),
            None if hello.max_message_bytes >= 1 else "hello.max_message_bytes: must be >= 1",
        )
    )


def welcome_problem(welcome: tunnel_pb2.Welcome, config: TunnelConfig) -> str | None:
    """Checks every field of a cloud's welcome against the limits of ``config``.

    Returns:
        ``None``, or the first field over its limit.
    """
    ids = config.max_id_bytes
    interval = (
        welcome.ping_interval.ToNanoseconds() / 1e9 if welcome.HasField("ping_interval") else None
    )
    return _first(
        (
            _check_text("welcome.session_id", welcome.session_id, ids),
            _check_text("welcome.node_id", welcome.node_id, ids),
            _check_list(
                "welcome.capabilities",
                welcome.capabilities,
                config.max_names,
                config.max_name_bytes,
            ),
            _check_list(
                "welcome.warnings", welcome.warnings, config.max_names, config.max_text_bytes
            ),
            _check_window("welcome.initial_window_bytes", welcome.initial_window_bytes),
            None if welcome.max_message_bytes >= 1 else "welcome.max_message_bytes: must be >= 1",
            None
            if interval is None or MIN_PING_INTERVAL <= interval <= MAX_PING_INTERVAL
            else f"welcome.ping_interval: {interval:g}s is outside "
            f"[{MIN_PING_INTERVAL:g}s, {MAX_PING_INTERVAL:g}s]",
        )
    )


def metadata_size(entries: Iterable[tunnel_pb2.MetadataEntry]) -> int:
    """Bytes of metadata entries as gRPC counts them (key + value + 32 per entry)."""
    return sum(len(entry.key) + len(entry.value) + 32 for entry in entries)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked when cut (for logs and statuses)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters, cut)"
