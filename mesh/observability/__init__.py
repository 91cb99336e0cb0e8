"""Observability of every process: request ids, spans, RPC metrics, the /metrics endpoint.

* `Tracing`: a process's spans: `CallSpan`s that cost next to nothing unless kept (their
  trace sampled, or the call failed), kept ones in a bounded local `SpanSink` (and
  exported over OTLP when configured); `current_span` / `current_traceparent`: the span
  of the call being served (``mesh.logs.CURRENT_SPAN``);
* `ServerObservability` / `client_interceptors`: ``grpc.aio`` interceptors (W3C
  ``traceparent`` in and out, ``x-request-id`` to apps, ``grpc_server_*`` /
  ``grpc_client_*`` metrics);
* `TunnelClientHook` / `TunnelServerHook`: the same across the tunnel (the open frame's
  trace context);
* `counter` / `gauge` / `histogram` / `collect_with`: one-line metric registration;
* `MetricsServer`: ``GET /metrics``, bearer token off loopback.

Log lines (request id, JSON, masking, per-peer limits) are in `mesh.logs`.
"""

from __future__ import annotations

from mesh.observability._grpc import (
    REQUEST_ID_KEY,
    ServerObservability,
    client_interceptors,
    code_of,
    with_traceparent,
)
from mesh.observability._hooks import TunnelClientHook, TunnelServerHook
from mesh.observability._http import MetricsServer
from mesh.observability._metrics import (
    LATENCY_BUCKETS,
    RPC_METRICS,
    RpcCounts,
    RpcMetrics,
    collect_with,
    counter,
    gauge,
    histogram,
    registry,
)
from mesh.observability._tracing import (
    CallSpan,
    SpanRecord,
    SpanSink,
    Tracing,
    context_from_traceparent,
    current_span,
    current_traceparent,
    traceparent_of,
    valid_trace_id,
)
from mesh.observability._tunnels import watch_gateway
from mesh.observability_config import ObservabilityConfig, is_loopback

__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_ID_KEY",
    "RPC_METRICS",
    "CallSpan",
    "MetricsServer",
    "ObservabilityConfig",
    "RpcCounts",
    "RpcMetrics",
    "ServerObservability",
    "SpanRecord",
    "SpanSink",
    "Tracing",
    "TunnelClientHook",
    "TunnelServerHook",
    "client_interceptors",
    "code_of",
    "collect_with",
    "context_from_traceparent",
    "counter",
    "current_span",
    "current_traceparent",
    "gauge",
    "histogram",
    "is_loopback",
    "registry",
    "traceparent_of",
    "valid_trace_id",
    "watch_gateway",
    "with_traceparent",
]
