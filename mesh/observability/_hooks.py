"""Tunnel call hooks: the trace context in the open frame, spans and RPC metrics per call.

`TunnelClientHook` (cloud: on the gateway's channels) starts a CLIENT span per call, child
of whatever span is current in the caller (the patient API's, a forwarded call's), and
puts its context in the ``open`` frame's ``trace`` (and ``traceparent`` metadata).
`TunnelServerHook` (edge: on the ``TunnelServer``) starts the SERVER span from that context
and makes it current while the servicer, the rules and the adapter run, so their spans,
log lines and the HIS request carry the same trace id.
"""

from __future__ import annotations

import time

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from hplus.tunnel.v1 import tunnel_pb2
from mesh.observability._metrics import RPC_METRICS
from mesh.observability._tracing import CallSpan, Tracing, parse_traceparent
from mesh.tunnel import CallHook, CallInfo

__all__ = ["TunnelClientHook", "TunnelServerHook"]

_SPAN = "hplus.span"
_TOKEN = "hplus.token"
_METRIC = "hplus.metric"
_STARTED = "hplus.started"


def _finish(call: CallInfo, code: grpc.StatusCode, details: str) -> None:
    span = call.extra[_SPAN]
    assert isinstance(span, CallSpan)
    started = call.extra[_STARTED]
    assert isinstance(started, float)
    RPC_METRICS.handled(call.extra[_METRIC], code.name, time.perf_counter() - started)  # type: ignore[arg-type]
    span.end(code.value[0], f"{code.name}: {details}" if code is not grpc.StatusCode.OK else "")


class TunnelClientHook(CallHook):
    """Cloud side: a CLIENT span per tunnel call, its context sent in the open frame."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def on_start(self, call: CallInfo) -> None:
        """Starts the span and writes its context into the call."""
        span = self._tracing.begin(
            call.method[1:],
            SpanKind.CLIENT,
            attributes={"hplus.hospital_id": call.hospital_id, "tunnel.session": call.session},
        )
        parent = span.traceparent()
        state = call.trace.tracestate if call.trace is not None else ""
        call.trace = tunnel_pb2.TraceContext(traceparent=parent, tracestate=state)
        # The open frame's trace field carries it; a caller's own traceparent (a forwarded
        # call's metadata) must not reach the edge beside it.
        if any(k == "traceparent" for k, _ in call.metadata):
            call.metadata[:] = [(k, v) for k, v in call.metadata if k != "traceparent"]
        call.extra[_SPAN] = span
        call.extra[_METRIC] = RPC_METRICS.started("client", "unary", call.method)
        call.extra[_STARTED] = time.perf_counter()

    def on_end(self, call: CallInfo, code: grpc.StatusCode, details: str) -> None:
        """Ends the span with the call's status."""
        if _SPAN in call.extra:
            _finish(call, code, details)


class TunnelServerHook(CallHook):
    """Edge side: the SERVER span of each call, current while its servicer runs."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def on_start(self, call: CallInfo) -> None:
        """Starts the span from the caller's trace context and makes it current."""
        parent = parse_traceparent(call.trace.traceparent if call.trace else None)
        span = self._tracing.begin(
            call.method[1:],
            SpanKind.SERVER,
            parent=parent,
            attributes={"hplus.hospital_id": call.hospital_id},
        )
        call.extra[_SPAN] = span
        call.extra[_TOKEN] = otel_context.attach(span.current())
        call.extra[_METRIC] = RPC_METRICS.started("server", "unary", call.method)
        call.extra[_STARTED] = time.perf_counter()

    def on_end(self, call: CallInfo, code: grpc.StatusCode, details: str) -> None:
        """Ends the span and restores the caller's context."""
        if _SPAN not in call.extra:
            return
        _finish(call, code, details)
        token = call.extra.pop(_TOKEN, None)
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
