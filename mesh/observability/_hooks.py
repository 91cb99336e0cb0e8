"""Tunnel call hooks: the trace context in the open frame, spans and RPC metrics per call.

`TunnelClientHook` (cloud: on the gateway's channels) starts a CLIENT span per call, child
of whatever span is current in the caller (the patient API's, a forwarded call's), and
puts its ``traceparent`` in the ``open`` frame's ``trace``. `TunnelServerHook` (edge: on
the ``TunnelServer``) starts the SERVER span from that context and makes it current
(``mesh.logs.CURRENT_SPAN``) while the servicer, the rules and the adapter run, so their
spans, log lines and the HIS request carry the same trace id.

Both run on every call of a tunnel, so they do the least they can: one `CallSpan` (kept
only when sampled or failed), one context variable, the method's RPC counters looked up
once per method and bumped as plain integers.
"""

from __future__ import annotations

import contextvars
import random
import time
from typing import Any

import grpc
from opentelemetry.trace import SpanKind

from hplus.tunnel.v1 import tunnel_pb2
from mesh.logs import CURRENT_SPAN
from mesh.observability._metrics import RPC_METRICS, RpcCounts
from mesh.observability._tracing import CallSpan, Tracing
from mesh.tunnel import CallHook, CallInfo

__all__ = ["TunnelClientHook", "TunnelServerHook"]

_STATE = "hplus.observed"
_OK = grpc.StatusCode.OK
_LOW56 = (1 << 56) - 1
_NONZERO = (1 << 64) | 1


class TunnelClientHook(CallHook):
    """Cloud side: a CLIENT span per tunnel call, its context sent in the open frame.

    Tail-style: at the start only the ids that travel (the ``traceparent``) and a clock
    reading are made; the span itself is built at the end, and only if it is kept.
    """

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self._rpcs = RPC_METRICS.table("client", "unary")

    def on_start(self, call: CallInfo) -> None:
        """Sends the span's context with the call; notes what its end needs."""
        parent: CallSpan | None = CURRENT_SPAN.get()
        if parent is None:
            # A new trace: its id and this span's in one draw (the lowest bit of each set,
            # so neither is ever all zeros).
            bits = random.getrandbits(192) | _NONZERO
            ids = "%048x" % bits  # noqa: UP031  (the fastest way)
            trace_hex, span_hex = ids[:32], ids[32:]
            sampled = (bits >> 64) & _LOW56 < self._tracing.threshold
        else:
            trace_hex = parent.trace_hex
            sampled = parent.sampled
            span_hex = "%016x" % (random.getrandbits(64) | 1)
        traceparent = f"00-{trace_hex}-{span_hex}-{'01' if sampled else '00'}"
        given = call.trace
        if given is None:
            call.trace = tunnel_pb2.TraceContext(traceparent=traceparent)
        else:
            call.trace = tunnel_pb2.TraceContext(
                traceparent=traceparent, tracestate=given.tracestate
            )
            # The open frame's trace field carries it; a caller's own traceparent (a
            # forwarded call's metadata) must not reach the edge beside it.
            call.metadata[:] = [(k, v) for k, v in call.metadata if k != "traceparent"]
        rpc = self._rpcs.get(call.method) or RPC_METRICS.counts("client", "unary", call.method)
        rpc.started += 1
        call.extra[_STATE] = (trace_hex, span_hex, parent, sampled, time.monotonic(), rpc)

    def on_end(self, call: CallInfo, code: grpc.StatusCode, details: str) -> None:
        """Counts the call; keeps its span if sampled or failed."""
        state = call.extra.get(_STATE)
        if state is None:
            return
        trace_hex: str
        span_hex: str
        parent: CallSpan | None
        sampled: bool
        started: float
        rpc: RpcCounts
        trace_hex, span_hex, parent, sampled, started, rpc = state  # type: ignore[misc]
        rpc.handled(code, time.monotonic() - started)
        if code is _OK and not sampled:
            return
        span = CallSpan(
            self._tracing, call.method, SpanKind.CLIENT, trace_hex, parent, sampled,
            call.hospital_id, {"tunnel.session": call.session},
        )  # fmt: skip
        span.started = started
        span.span_hex = span_hex
        if code is _OK:
            span.end(0)
        else:
            span.end(code.value[0], f"{code.name}: {details}")


class TunnelServerHook(CallHook):
    """Edge side: the SERVER span of each call, current while its servicer runs."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self._rpcs = RPC_METRICS.table("server", "unary")

    def on_start(self, call: CallInfo) -> None:
        """Starts the span from the caller's trace context and makes it current."""
        given = call.trace
        span = self._tracing.serve(
            call.method,
            SpanKind.SERVER,
            given.traceparent if given is not None else None,
            hospital_id=call.hospital_id,
        )
        rpc = self._rpcs.get(call.method) or RPC_METRICS.counts("server", "unary", call.method)
        rpc.started += 1
        call.extra[_STATE] = (span, rpc, CURRENT_SPAN.set(span))

    def on_end(self, call: CallInfo, code: grpc.StatusCode, details: str) -> None:
        """Ends the span and restores the caller's context."""
        state = call.extra.pop(_STATE, None)
        if state is None:
            return
        span: CallSpan
        rpc: RpcCounts
        token: contextvars.Token[Any]
        span, rpc, token = state  # type: ignore[misc]
        CURRENT_SPAN.reset(token)
        rpc.handled(code, time.monotonic() - span.started)
        if code is _OK:
            if span.sampled:
                span.end(0)
        else:
            span.end(code.value[0], f"{code.name}: {details}")
