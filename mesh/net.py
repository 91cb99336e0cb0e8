"""Network address helpers shared by the cloud and the edge."""

from __future__ import annotations

__all__ = ["parse_hostport"]


def parse_hostport(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:50051`` for IPv6) and check both parts.

    Raises:
        ValueError: the value is not ``HOST:PORT`` with a port in 0..65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)
