"""Settings of a process's observability.

``[observability]`` of the node's file; the edge's flags. A module of its own, light to
import (configuration is loaded before anything heavy).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from mesh.net import parse_hostport

__all__ = ["ObservabilityConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObservabilityConfig:
    """Metrics endpoint, span storage and export."""

    enabled: bool = True
    """Spans and RPC metrics at all; ``false`` installs no interceptor or hook (the
    baseline of ``bench.observability``; LookupTrace then answers UNIMPLEMENTED)."""
    metrics_listen: str = ""
    """``HOST:PORT`` of ``GET /metrics``; "" serves none. Off loopback it needs
    ``metrics_token_file``."""
    metrics_token_file: Path | None = None
    """File holding the bearer token scrapers must send (required off loopback)."""
    otlp_endpoint: str = ""
    """OTLP/gRPC collector to export spans to as well; "" exports nowhere (the ``otlp``
    extra must be installed)."""
    traces_database_url: str | None = None
    """Node: SQLAlchemy URL of the span table; default ``<data_dir>/traces.db``. Nodes that
    share one database see each other's spans directly."""
    span_sample_rate: float = 0.01
    """Fraction of traces whose successful calls keep their spans (decided from the trace
    id, so every process keeps the same traces; a sampled ``traceparent`` from a peer or
    an operator is obeyed: ``hplus cloud call`` sends one). Failed calls always keep
    theirs. The one default of node and edge: 1 %, because storing a span costs about as
    much CPU as the call it describes on a light call (``bench.observability``)."""
    max_spans: int = 200_000
    """Spans kept locally at most (the oldest go first)."""
    span_retention_seconds: float = 7 * 24 * 3600.0
    """Spans older than this are deleted."""

    def __post_init__(self) -> None:
        if self.metrics_listen:
            try:
                host, _ = parse_hostport(self.metrics_listen)
            except ValueError as err:
                raise ValueError(f"metrics_listen: {err}") from None
            if not is_loopback(host) and self.metrics_token_file is None:
                raise ValueError(
                    f"metrics_listen: {self.metrics_listen} is not a loopback address: "
                    "set metrics_token_file"
                )
        if not 0.0 <= self.span_sample_rate <= 1.0:
            raise ValueError(
                f"span_sample_rate: must be within [0, 1], got {self.span_sample_rate}"
            )
        if self.max_spans < 100:
            raise ValueError(f"max_spans: must be >= 100, got {self.max_spans}")
        if self.span_retention_seconds <= 0:
            raise ValueError("span_retention_seconds: must be > 0")
