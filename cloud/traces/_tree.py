"""One trace as a tree of hops: what ``hplus trace`` prints and the dashboard's trace page shows.

`trace_tree` takes a ``LookupTraceResponse`` (every span of a request, across nodes, edges
and the HIS) and orders it depth-first under its roots, each hop with its depth, its offset
from the trace's start, its duration, where it ran and whether it is the hop where the call
failed (`failing_span`). Both views render this one structure; neither assembles its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import grpc

from hplus.cloud.v1 import operations_pb2
from mesh.observability import valid_trace_id

__all__ = [
    "REQUEST_ID_FORMAT",
    "TIERS",
    "Hop",
    "TraceTree",
    "failing_span",
    "parse_request_id",
    "trace_tree",
]

TIERS = {
    operations_pb2.SPAN_TIER_UNSPECIFIED: "?",
    operations_pb2.SPAN_TIER_CLOUD: "cloud",
    operations_pb2.SPAN_TIER_EDGE: "edge",
    operations_pb2.SPAN_TIER_HIS: "his",
}
_KINDS = {
    operations_pb2.SPAN_KIND_SERVER: "server",
    operations_pb2.SPAN_KIND_CLIENT: "client",
    operations_pb2.SPAN_KIND_INTERNAL: "internal",
    operations_pb2.SPAN_KIND_PRODUCER: "producer",
    operations_pb2.SPAN_KIND_CONSUMER: "consumer",
}
_CODES = {c.value[0]: c.name for c in grpc.StatusCode}

REQUEST_ID_FORMAT = (
    "32 hexadecimal digits: the x-request-id an app received (a W3C trace id), "
    "or a whole traceparent header (00-<trace id>-<span id>-<flags>)"
)
"""What a trace search accepts, as error messages name it."""


def parse_request_id(text: str) -> str | None:
    """The trace id in what an operator pasted, or ``None`` when it is not one.

    Accepts a request id / trace id (32 hex digits, any case, surrounding blanks ignored)
    or a whole ``traceparent`` header.
    """
    value = text.strip().lower()
    parts = value.split("-")
    if len(parts) >= 4 and len(parts[0]) == 2:  # version-traceid-spanid-flags
        value = parts[1]
    return value if valid_trace_id(value) else None


def failing_span(spans: Sequence[operations_pb2.Span]) -> str:
    """The span id of the hop where the call failed.

    The earliest failed span none of whose children failed (``""`` when all are OK).
    """
    failed = {s.span_id for s in spans if s.status.code != 0}
    if not failed:
        return ""
    parents = {s.parent_span_id for s in spans if s.span_id in failed}
    leaves = [s for s in spans if s.span_id in failed and s.span_id not in parents]
    return min(leaves, key=lambda s: s.start_time.ToNanoseconds()).span_id if leaves else ""


@dataclasses.dataclass(frozen=True)
class Hop:
    """One span in its place in the tree."""

    span: operations_pb2.Span
    depth: int
    """0 for a root."""
    offset_ms: float
    """Milliseconds from the trace's first span to this one's start."""
    duration_ms: float
    culprit: bool
    """The hop where the call failed."""

    @property
    def name(self) -> str:
        """``service/method`` (or the service alone)."""
        s = self.span
        return f"{s.service}/{s.method}" if s.method else s.service

    @property
    def tier(self) -> str:
        """``cloud``, ``edge``, ``his`` or ``?``."""
        return TIERS.get(self.span.tier, "?")

    @property
    def kind(self) -> str:
        """``server``, ``client``, ``internal``, ``producer`` or ``consumer``."""
        return _KINDS.get(self.span.kind, "internal")

    @property
    def node(self) -> str:
        """The process that recorded it: a node id or an edge id."""
        return self.span.node or "-"

    @property
    def ok(self) -> bool:
        """Whether it succeeded."""
        return self.span.status.code == 0

    @property
    def code(self) -> str:
        """The gRPC status code's name (``OK``, ``UNAVAILABLE``, ...)."""
        return _CODES.get(self.span.status.code, str(self.span.status.code))

    @property
    def message(self) -> str:
        """The failure's message (empty when OK)."""
        return "" if self.ok else self.span.status.message

    @property
    def detail(self) -> str:
        """The failure's message without the code's name it may start with."""
        message = self.message
        prefix = f"{self.code}: "
        while message.startswith(prefix):
            message = message[len(prefix) :]
        return message


@dataclasses.dataclass(frozen=True)
class TraceTree:
    """A trace's hops, depth first, children by start time."""

    trace_id: str
    started: dt.datetime
    total_ms: float
    """From the first span's start to the last span's end."""
    hops: list[Hop]
    complete: bool
    pending_hospital_ids: list[str]

    @property
    def culprit(self) -> Hop | None:
        """The hop where the call failed, if it failed."""
        return next((h for h in self.hops if h.culprit), None)

    @property
    def incomplete(self) -> str:
        """Why spans are missing (empty when the trace is complete)."""
        if self.complete:
            return ""
        pending = ", ".join(self.pending_hospital_ids)
        return f"no answer from the edge of {pending}" if pending else "some parents are missing"


def trace_tree(answer: operations_pb2.LookupTraceResponse) -> TraceTree:
    """The tree of a ``LookupTraceResponse`` (which has at least one span)."""
    spans = list(answer.spans)
    ids = {s.span_id for s in spans}
    children: dict[str, list[operations_pb2.Span]] = {}
    roots = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in ids:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            roots.append(s)
    start = min(s.start_time.ToNanoseconds() for s in spans)
    end = max(s.start_time.ToNanoseconds() + s.duration.ToNanoseconds() for s in spans)
    culprit = failing_span(spans)
    hops: list[Hop] = []

    def walk(span: operations_pb2.Span, depth: int) -> None:
        hops.append(
            Hop(
                span=span,
                depth=depth,
                offset_ms=(span.start_time.ToNanoseconds() - start) / 1e6,
                duration_ms=span.duration.ToNanoseconds() / 1e6,
                culprit=span.span_id == culprit,
            )
        )
        for child in sorted(
            children.get(span.span_id, []), key=lambda c: c.start_time.ToNanoseconds()
        ):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return TraceTree(
        trace_id=answer.trace_id,
        started=dt.datetime.fromtimestamp(start / 1e9, dt.UTC),
        total_ms=(end - start) / 1e6,
        hops=hops,
        complete=answer.complete,
        pending_hospital_ids=list(answer.pending_hospital_ids),
    )
