"""Spans of the call path, kept in a local store by default (and exported over OTLP).

Each process builds one `Tracing` (its own ``TracerProvider``: several nodes may share a
test process). A call's span is a `CallSpan`: it costs a trace id, a context variable and
a clock read unless it is kept (its trace sampled, or the call failed), and only kept
spans become `SpanRecord` rows in a bounded in-memory queue that a background task
flushes to the process's `SpanSink` (the node's database table, the edge's SQLite ring
buffer) once a second; when the queue is full the oldest waiting spans are dropped and
counted (``hplus_spans_dropped_total``), so a flood of calls cannot make the process hold
more. With an OTLP endpoint configured, kept spans go through the OpenTelemetry SDK and
are exported there too (the ``otlp`` extra: ``opentelemetry-exporter-otlp-proto-grpc``).

The span of the call being served is ``mesh.logs.CURRENT_SPAN`` (a context variable the
hooks set and reset): log lines take the request id from it, children their parent, the
HIS dialects the ``traceparent`` they send (`current_traceparent`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.logs import CURRENT_SPAN, mask_identifiers
from mesh.observability._metrics import counter

__all__ = [
    "CallSpan",
    "SpanRecord",
    "SpanSink",
    "Tracing",
    "context_from_traceparent",
    "current_span",
    "current_traceparent",
    "parse_traceparent",
    "span_context_from_traceparent",
    "traceparent_of",
    "valid_trace_id",
]

log = logging.getLogger(__name__)

_DROPPED = counter(
    "hplus_spans_dropped_total", "Spans dropped before storage (queue full or store failing)"
)

_KINDS = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace.TraceFlags(0)


@dataclasses.dataclass(frozen=True, slots=True)
class SpanRecord:
    """One ended span as the local stores keep it."""

    trace_id: str
    """32 lower-case hex digits."""
    span_id: str
    """16 lower-case hex digits."""
    parent_span_id: str
    """16 hex digits, or "" for a root."""
    name: str
    """``package.Service/Method`` for RPCs, ``his.<operation>`` for HIS calls."""
    kind: str
    """``server``, ``client``, ``internal``, ``producer`` or ``consumer``."""
    node: str
    """The process that recorded it (node id, edge id)."""
    hospital_id: str
    """The hospital it concerns, or ""."""
    start_ns: int
    """Start, Unix nanoseconds."""
    duration_ns: int
    """Duration in nanoseconds."""
    code: int
    """gRPC status code (0: OK)."""
    message: str
    """Status message (masked)."""
    attributes: Mapping[str, str]
    """Further attributes (masked)."""

    def attributes_json(self) -> str:
        """The attributes as a JSON object (how the stores keep them)."""
        return json.dumps(dict(self.attributes), ensure_ascii=False, sort_keys=True)

    def encoded_size(self) -> int:
        """Approximate bytes the record takes in a store (for the bench's bytes per call)."""
        return (
            32 + 16 + 16 + len(self.name) + len(self.kind) + len(self.node)
            + len(self.hospital_id) + 8 + 8 + 4 + len(self.message)
            + len(self.attributes_json())
        )  # fmt: skip


class SpanSink(Protocol):
    """Where a process keeps its spans (bounded by the sink itself)."""

    async def write(self, records: Sequence[SpanRecord]) -> None:
        """Stores a batch of ended spans."""

    async def lookup(self, trace_id: str, *, limit: int) -> list[SpanRecord]:
        """The stored spans of one trace, by start time (at most ``limit``)."""


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def valid_trace_id(value: str) -> bool:
    """Whether ``value`` is a W3C trace id (32 lower-case hex digits, not all zero)."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value) and value != "0" * 32


def traceparent_of(span: trace.Span) -> str:
    """The ``traceparent`` header naming ``span`` as the parent."""
    ctx = span.get_span_context()
    flags = "01" if ctx.trace_flags.sampled else "00"
    return f"00-{_hex(ctx.trace_id, 32)}-{_hex(ctx.span_id, 16)}-{flags}"


def context_from_traceparent(value: str | None) -> otel_context.Context | None:
    """An OpenTelemetry context whose remote parent is ``value`` (None when malformed)."""
    remote = span_context_from_traceparent(value)
    return None if remote is None else trace.set_span_in_context(trace.NonRecordingSpan(remote))


_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a ``traceparent``; None when malformed.

    W3C rules: version ``00`` has exactly four fields; higher versions may append fields;
    ``ff`` is invalid; ids are lower-case hex and not all zero.
    """
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if (
        len(version) != 2
        or version == "ff"
        or (version == "00" and len(parts) != 4)
        or len(trace_id) != 32
        or len(span_id) != 16
        or len(flags) != 2
        or not _HEX.issuperset(version + trace_id + span_id + flags)
    ):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if not tid or not sid:
        return None
    return tid, sid, bool(int(flags, 16) & 1)


def span_context_from_traceparent(value: str | None) -> trace.SpanContext | None:
    """The remote span context ``value`` names (None when malformed; see `parse_traceparent`)."""
    found = parse_traceparent(value)
    if found is None:
        return None
    tid, sid, sampled = found
    return trace.SpanContext(tid, sid, True, _SAMPLED if sampled else _NOT_SAMPLED)


def _record(span: ReadableSpan, node: str) -> SpanRecord:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    attrs = span.attributes or {}
    hospital = str(attrs.get("hplus.hospital_id", ""))
    default = 2 if span.status.status_code is StatusCode.ERROR else 0
    raw = attrs.get("rpc.grpc.status_code", default)
    code = raw if isinstance(raw, int) else default
    extra = {
        k: mask_identifiers(str(v))
        for k, v in attrs.items()
        if k not in ("hplus.hospital_id", "rpc.grpc.status_code")
    }
    start = span.start_time or 0
    end = span.end_time or start
    return SpanRecord(
        trace_id=_hex(ctx.trace_id, 32),
        span_id=_hex(ctx.span_id, 16),
        parent_span_id=_hex(parent.span_id, 16) if parent is not None else "",
        name=span.name,
        kind=_KINDS.get(span.kind, "internal"),
        node=node,
        hospital_id=hospital,
        start_ns=start,
        duration_ns=max(0, end - start),
        code=code,
        message=mask_identifiers(span.status.description or ""),
        attributes=extra,
    )


class _QueueProcessor(SpanProcessor):
    """Ended spans → `SpanRecord` into a bounded deque (no I/O on the caller's path)."""

    def __init__(self, node: str, capacity: int) -> None:
        self.node = node
        self.queue: collections.deque[SpanRecord] = collections.deque()
        self.capacity = capacity
        self.wakeup: asyncio.Event | None = None

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.put(_record(span, self.node))

    def put(self, record: SpanRecord) -> None:
        """Queues a record, dropping the oldest waiting one when full."""
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            _DROPPED.inc()
        self.queue.append(record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _PresetIds(RandomIdGenerator):
    """Ids the SDK gives a span: the ones a `CallSpan` already has, if set."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        found, self.span_id = self.span_id, 0
        return found or super().generate_span_id()

    def generate_trace_id(self) -> int:
        found, self.trace_id = self.trace_id, 0
        return found or super().generate_trace_id()


_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_LOW56 = (1 << 56) - 1
_HEADER = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
"""The common form of a ``traceparent`` (others go through `parse_traceparent`)."""


def _new_span_hex() -> str:
    return "%016x" % (random.getrandbits(64) or 1)


class CallSpan:
    """A span of the call path that costs almost nothing unless it is kept.

    Tail-style: at its start only the trace id (the request id every log line and hop
    carries), the parent, the sampling decision and a monotonic start time are noted. Its
    own span id is drawn when something needs it: a child's ``traceparent`` sent
    downstream, or the span being kept. When it ends, it becomes a `SpanRecord` if its
    trace is sampled or the call failed; otherwise nothing is made or stored at all.
    A client span (one whose ``traceparent`` goes downstream) draws its id at once, so a
    failing trace keeps its exact parent/child tree.
    """

    __slots__ = (
        "_header", "_parent", "_span_hex", "attributes", "hospital_id", "kind", "name",
        "sampled", "started", "trace_hex", "tracing",
    )  # fmt: skip

    def __init__(
        self,
        tracing: Tracing,
        name: str,
        kind: SpanKind,
        trace_hex: str,
        parent: CallSpan | str | None,
        sampled: bool,
        hospital_id: str = "",
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.tracing = tracing
        self.name = name
        """The span's name (a leading ``/`` of a gRPC method is dropped when kept)."""
        self.kind = kind
        self.trace_hex = trace_hex
        """The trace id, 32 lower-case hex digits: the request id."""
        self._parent = parent
        self.sampled = sampled
        """Whether the trace is sampled (then the span is kept whatever its outcome)."""
        self.hospital_id = hospital_id
        self.attributes = attributes
        """Further attributes (made on demand; masked when kept)."""
        self.started = time.monotonic()
        """``time.monotonic()`` at the start (also the RPC metrics' latency origin)."""
        self._span_hex = ""
        self._header = ""

    @property
    def span_hex(self) -> str:
        """This span's id, 16 hex digits (drawn on first use)."""
        found = self._span_hex
        if not found:
            found = self._span_hex = _new_span_hex()
        return found

    @span_hex.setter
    def span_hex(self, value: str) -> None:
        self._span_hex = value

    @property
    def parent_hex(self) -> str:
        """The parent span's id, or "" for a root."""
        parent = self._parent
        if parent is None:
            return ""
        if isinstance(parent, str):
            return parent
        return parent.span_hex

    def traceparent(self) -> str:
        """The ``traceparent`` naming this span as the parent (made once)."""
        found = self._header
        if not found:
            flags = "01" if self.sampled else "00"
            found = self._header = f"00-{self.trace_hex}-{self.span_hex}-{flags}"
        return found

    def set_attribute(self, key: str, value: Any) -> None:
        """Sets an attribute (kept only with the span)."""
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def end(self, code: int, message: str = "") -> None:
        """Ends the span with a gRPC status code; kept if sampled or failed."""
        if code or self.sampled:
            self.tracing.record(self, code, message)


def current_span() -> CallSpan | None:
    """The `CallSpan` of the call being served, if any."""
    span: CallSpan | None = CURRENT_SPAN.get()
    return span


def current_traceparent() -> str:
    """The ``traceparent`` of the current span ("" outside a call): what a hop sends on."""
    span: CallSpan | None = CURRENT_SPAN.get()
    if span is not None:
        return span.traceparent()
    found = trace.get_current_span()
    return traceparent_of(found) if found.get_span_context().is_valid else ""


class Tracing:
    """One process's spans: the sampling decision, the bounded queue and its flusher.

    Args:
        service: the OpenTelemetry ``service.name`` (``hplus-node``, ``hplus-edge``).
        node: the process's name in spans (node id, edge id).
        sink: the local store; ``None`` keeps nothing locally (spans only exported).
        queue_capacity: ended spans waiting for the flusher, at most.
        flush_interval: seconds between flushes.
        otlp_endpoint: OTLP/gRPC collector address; "" for none.
        sample_rate: fraction of traces whose successful calls are kept (decided from the
            trace id, so every process keeps the same traces); failed calls always are.
    """

    def __init__(
        self,
        *,
        service: str,
        node: str,
        sink: SpanSink | None,
        queue_capacity: int = 20_000,
        flush_interval: float = 1.0,
        otlp_endpoint: str = "",
        sample_rate: float = 1.0,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate: must be within [0, 1], got {sample_rate}")
        self.node = node
        self.sample_rate = sample_rate
        self.threshold = int(sample_rate * (1 << 56))
        """Traces whose low 56 bits are below this are sampled."""
        # The same bound as 14 hex digits: the low 56 bits of a trace id in hex compare
        # as text like the numbers they spell (no int parse per call).
        self._threshold_hex = (
            "%014x" % self.threshold if self.threshold < (1 << 56) else "g"  # noqa: UP031
        )
        self._ids = _PresetIds()
        self.sink = sink
        self._interval = flush_interval
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.instance.id": node}),
            shutdown_on_exit=False,
            id_generator=self._ids,
            # Which spans are kept is decided by `CallSpan.end` (failures always): whatever
            # reaches the SDK is recorded.
            sampler=ALWAYS_ON,
        )
        self._queue = _QueueProcessor(node, queue_capacity)
        if sink is not None:
            self.provider.add_span_processor(self._queue)
        self._exported = bool(otlp_endpoint)
        if otlp_endpoint:
            self.provider.add_span_processor(_otlp_processor(otlp_endpoint))
        self.tracer = self.provider.get_tracer("hplus")
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.stored = 0
        """Spans written to the sink so far."""
        self.kept = 0
        """Spans recorded (sampled or failed) so far."""

    def sampled(self, trace_id: int) -> bool:
        """Whether the successful calls of a trace are kept (from its low 56 bits)."""
        return (trace_id & _LOW56) < self.threshold

    def _sampled_hex(self, trace_hex: str) -> bool:
        return trace_hex[18:] < self._threshold_hex

    def begin(
        self,
        name: str,
        kind: SpanKind,
        *,
        hospital_id: str = "",
        attributes: dict[str, Any] | None = None,
    ) -> CallSpan:
        """Starts a `CallSpan`, child of the current span, or the root of a new trace."""
        parent: CallSpan | None = CURRENT_SPAN.get()
        if parent is not None:
            return CallSpan(
                self, name, kind, parent.trace_hex, parent, parent.sampled, hospital_id,
                attributes,
            )  # fmt: skip
        return self._root(name, kind, hospital_id, attributes)

    def serve(
        self,
        name: str,
        kind: SpanKind,
        header: str | None,
        *,
        hospital_id: str = "",
        attributes: dict[str, Any] | None = None,
        honor_sampled: bool = True,
    ) -> CallSpan:
        """Starts the `CallSpan` of a call received with ``traceparent`` ``header``.

        A valid header makes it the caller's child (its trace id is the request id), else
        it is the root of a new trace.

        Args:
            name: the span's name.
            kind: its kind.
            header: the caller's ``traceparent`` (None or malformed: a new trace).
            hospital_id: the hospital the call concerns, or "".
            attributes: further attributes.
            honor_sampled: keep the trace when the caller says it is sampled (false at the
                public endpoint: an app must not make us keep every trace).
        """
        if header:
            if len(header) == 55 and _HEADER.fullmatch(header) is not None:
                trace_hex, parent_hex, flags = header[3:35], header[36:52], header[53:]
            else:
                parsed = parse_traceparent(header)
                if parsed is None:
                    return self._root(name, kind, hospital_id, attributes)
                tid, sid, sampled = parsed
                trace_hex, parent_hex = _hex(tid, 32), _hex(sid, 16)
                flags = "01" if sampled else "00"
            if trace_hex != _ZERO_TRACE and parent_hex != _ZERO_SPAN:
                sampled = (honor_sampled and flags[1] in "13579bdf") or trace_hex[
                    18:
                ] < self._threshold_hex
                return CallSpan(
                    self, name, kind, trace_hex, parent_hex, sampled, hospital_id, attributes
                )
        return self._root(name, kind, hospital_id, attributes)

    def _root(
        self, name: str, kind: SpanKind, hospital_id: str, attributes: dict[str, Any] | None
    ) -> CallSpan:
        trace_id = random.getrandbits(128) or 1
        return CallSpan(
            self, name, kind, "%032x" % trace_id,  # noqa: UP031  (the fastest way)
            None, (trace_id & _LOW56) < self.threshold, hospital_id, attributes,
        )  # fmt: skip

    def record(self, span: CallSpan, code: int, message: str) -> None:
        """Keeps a `CallSpan` that ended: a `SpanRecord` in the queue (and to OTLP)."""
        self.kept += 1
        duration = max(0, int((time.monotonic() - span.started) * 1e9))
        start_ns = time.time_ns() - duration
        name = span.name[1:] if span.name.startswith("/") else span.name
        if self._exported:
            self._record_sdk(span, name, start_ns, code, message)
            return
        if self.sink is None:
            return
        attributes = span.attributes or {}
        self._queue.put(
            SpanRecord(
                trace_id=span.trace_hex,
                span_id=span.span_hex,
                parent_span_id=span.parent_hex,
                name=name,
                kind=_KINDS.get(span.kind, "internal"),
                node=self.node,
                hospital_id=span.hospital_id,
                start_ns=start_ns,
                duration_ns=duration,
                code=code,
                message=mask_identifiers(message),
                attributes={k: mask_identifiers(str(v)) for k, v in attributes.items()},
            )
        )

    def _record_sdk(
        self, span: CallSpan, name: str, start_ns: int, code: int, message: str
    ) -> None:
        """The SDK span of a kept `CallSpan` (its processors store and export it)."""
        self._ids.trace_id = int(span.trace_hex, 16)
        self._ids.span_id = int(span.span_hex, 16)
        parent_hex = span.parent_hex
        parent = (
            trace.set_span_in_context(
                trace.NonRecordingSpan(
                    trace.SpanContext(self._ids.trace_id, int(parent_hex, 16), True, _NOT_SAMPLED)
                )
            )
            if parent_hex
            else otel_context.Context()
        )
        attributes = dict(span.attributes or {})
        if span.hospital_id:
            attributes["hplus.hospital_id"] = span.hospital_id
        attributes["rpc.grpc.status_code"] = code
        sdk_span = self.tracer.start_span(
            name, context=parent, kind=span.kind, attributes=attributes, start_time=start_ns
        )
        self._ids.trace_id = self._ids.span_id = 0
        if code != 0:
            sdk_span.set_status(Status(StatusCode.ERROR, message))
        sdk_span.end()

    @property
    def pending(self) -> int:
        """Ended spans not yet written."""
        return len(self._queue.queue)

    async def flush(self) -> None:
        """Writes every waiting span to the sink now."""
        queue = self._queue.queue
        while queue and self.sink is not None:
            batch = [queue.popleft() for _ in range(min(len(queue), 2000))]
            try:
                await self.sink.write(batch)
                self.stored += len(batch)
            except Exception:
                _DROPPED.inc(len(batch))
                log.exception("span store failed; %d span(s) dropped", len(batch))
                return

    async def run(self) -> None:
        """Flushes once per interval until `shutdown`."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.flush()

    def start(self) -> None:
        """Runs the flusher in a task of its own (stopped by `shutdown`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="span-flush")

    async def shutdown(self) -> None:
        """Stops the flusher after a last flush."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        else:
            await self.flush()
        self.provider.shutdown()


def _otlp_processor(endpoint: str) -> SpanProcessor:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise ValueError(
            "otlp_endpoint: the OTLP exporter is not installed "
            "(pip install 'hplus[otlp]' or opentelemetry-exporter-otlp-proto-grpc)"
        ) from None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
