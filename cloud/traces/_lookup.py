"""One trace joined across the cloud's nodes and the hospitals' edges.

The node asked reads its own span store, asks every other node it knows of (presence)
for theirs (``x-hplus-trace-scope: local``: a peer answers from its store only), and asks
the edge of each hospital the spans name for the edge's part, through the tunnel
(``EdgeAdminService.LookupTrace``; the router forwards to the node holding the tunnel).
An edge or node that does not answer makes the trace incomplete, never an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import status_pb2

from cloud.gateway import INTERNAL_AUTH_KEY, HospitalRouter, HospitalUnavailable
from cloud.presence import Presence, PresenceUnavailable
from cloud.traces._store import FailedCall, NodeSpanStore
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from mesh import errors
from mesh.observability import SpanRecord, valid_trace_id

__all__ = ["SCOPE_KEY", "TraceLookup", "span_of_record"]

log = logging.getLogger(__name__)

SCOPE_KEY = "x-hplus-trace-scope"
"""Metadata of a node-to-node LookupTrace: ``local`` answers from the node's store only."""

_KINDS = {
    "server": operations_pb2.SPAN_KIND_SERVER,
    "client": operations_pb2.SPAN_KIND_CLIENT,
    "internal": operations_pb2.SPAN_KIND_INTERNAL,
    "producer": operations_pb2.SPAN_KIND_PRODUCER,
    "consumer": operations_pb2.SPAN_KIND_CONSUMER,
}
_EDGE_KINDS = {
    admin_pb2.SPAN_KIND_SERVER: operations_pb2.SPAN_KIND_SERVER,
    admin_pb2.SPAN_KIND_CLIENT: operations_pb2.SPAN_KIND_CLIENT,
    admin_pb2.SPAN_KIND_INTERNAL: operations_pb2.SPAN_KIND_INTERNAL,
    admin_pb2.SPAN_KIND_PRODUCER: operations_pb2.SPAN_KIND_PRODUCER,
    admin_pb2.SPAN_KIND_CONSUMER: operations_pb2.SPAN_KIND_CONSUMER,
}


def _split(name: str) -> tuple[str, str]:
    if "/" in name:
        service, _, method = name.partition("/")
        return service, method
    service, _, method = name.rpartition(".")
    return service or name, method


def _ts_ns(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def _dur_ns(ns: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(ns)
    return d


def span_of_record(record: SpanRecord) -> operations_pb2.Span:
    """A span of the node's store in the operations contract's form."""
    service, method = _split(record.name)
    return operations_pb2.Span(
        span_id=record.span_id,
        parent_span_id=record.parent_span_id,
        kind=_KINDS.get(record.kind, operations_pb2.SPAN_KIND_INTERNAL),
        tier=operations_pb2.SPAN_TIER_CLOUD,
        service=service,
        method=method,
        node=record.node,
        hospital_id=record.hospital_id,
        start_time=_ts_ns(record.start_ns),
        duration=_dur_ns(record.duration_ns),
        status=status_pb2.Status(code=record.code, message=record.message),
        attributes=dict(record.attributes),
    )


def _edge_span(span: admin_pb2.Span, hospital_id: str) -> operations_pb2.Span:
    service, method = _split(span.name)
    start = span.start_time.ToNanoseconds()
    end = span.end_time.ToNanoseconds() if span.HasField("end_time") else start
    attributes = dict(span.attributes)
    return operations_pb2.Span(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        kind=_EDGE_KINDS.get(span.kind, operations_pb2.SPAN_KIND_INTERNAL),
        tier=operations_pb2.SPAN_TIER_HIS
        if span.name.startswith("his.")
        else operations_pb2.SPAN_TIER_EDGE,
        service=service,
        method=method,
        node=attributes.pop("edge.id", span.component),
        hospital_id=hospital_id,
        start_time=span.start_time,
        duration=_dur_ns(max(0, end - start)),
        status=span.status,
        attributes=attributes,
    )


class TraceLookup:
    """Answers ``OperationsService.LookupTrace`` for a node.

    Args:
        store: this node's span store.
        presence: where the other nodes are found.
        router: channels to hospitals (edges) and peers.
        node_id: this node.
        secret: the cluster secret (peers' internal endpoints).
        timeout: seconds each peer and edge has to answer.
    """

    def __init__(
        self,
        store: NodeSpanStore,
        *,
        presence: Presence,
        router: HospitalRouter,
        node_id: str,
        secret: str,
        timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._presence = presence
        self._router = router
        self._node_id = node_id
        self._secret = secret
        self._timeout = timeout

    async def local(self, trace_id: str) -> list[operations_pb2.Span]:
        """This node's (store's) spans of the trace."""
        return [span_of_record(r) for r in await self._store.lookup(trace_id)]

    async def recent_failures(self, hospital_id: str, *, limit: int = 20) -> list[FailedCall]:
        """The newest failed calls concerning a hospital in this node's store."""
        return await self._store.recent_failures(hospital_id, limit=limit)

    async def _peer(self, address: str, trace_id: str) -> list[operations_pb2.Span]:
        stub = operations_pb2_grpc.OperationsServiceStub(self._router.peer_channel(address))
        try:
            answer = await stub.LookupTrace(
                operations_pb2.LookupTraceRequest(trace_id=trace_id),
                metadata=((INTERNAL_AUTH_KEY, self._secret), (SCOPE_KEY, "local")),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.NOT_FOUND:
                log.warning(
                    "trace %s: node %s did not answer: %s", trace_id, address, err.code().name
                )
            return []
        return list(answer.spans)

    async def _edge(self, hospital_id: str, trace_id: str) -> list[operations_pb2.Span] | None:
        try:
            channel = await self._router.channel_for(hospital_id)
        except HospitalUnavailable:
            return None
        stub = errors.wrap(admin_pb2_grpc.EdgeAdminServiceStub(channel))
        spans: list[operations_pb2.Span] = []
        token = ""
        try:
            for _ in range(20):  # pages of up to 5000: far above any one trace
                answer = await stub.LookupTrace(
                    admin_pb2.LookupTraceRequest(
                        trace_id=trace_id, page_size=5000, page_token=token
                    ),
                    timeout=self._timeout,
                )
                spans.extend(_edge_span(s, hospital_id) for s in answer.spans)
                token = answer.next_page_token
                if not token:
                    break
        except errors.StatusError as err:
            log.warning("trace %s: the edge of %s did not answer: %s", trace_id, hospital_id, err)
            return None
        return spans

    async def lookup(
        self, trace_id: str, *, local_only: bool
    ) -> operations_pb2.LookupTraceResponse:
        """The whole trace (or this node's part, with ``local_only``).

        Raises:
            mesh.errors.InvalidArgument: not a W3C trace id.
            mesh.errors.NotFound: no span of the trace is known.
        """
        if not valid_trace_id(trace_id):
            raise errors.InvalidArgument(
                field_violations=[("trace_id", "must be 32 lower-case hex digits, not all zero")]
            )
        spans = await self.local(trace_id)
        pending: list[str] = []
        if not local_only:
            try:
                records = await self._presence.all()
            except PresenceUnavailable:
                records = []
            peers = sorted({r.node_address for r in records if r.node_id != self._node_id})
            found = await asyncio.gather(*(self._peer(p, trace_id) for p in peers))
            seen = {s.span_id for s in spans}
            for group in found:
                for span in group:
                    if span.span_id not in seen and span.tier == operations_pb2.SPAN_TIER_CLOUD:
                        seen.add(span.span_id)
                        spans.append(span)
            hospitals = sorted(
                {
                    s.hospital_id
                    for s in spans
                    if s.hospital_id and s.kind == operations_pb2.SPAN_KIND_CLIENT
                }
            )
            edges = await asyncio.gather(*(self._edge(h, trace_id) for h in hospitals))
            for hospital, answered in zip(hospitals, edges, strict=True):
                if answered is None:
                    pending.append(hospital)
                    continue
                for span in answered:
                    if span.span_id not in seen:
                        seen.add(span.span_id)
                        spans.append(span)
        if not spans:
            raise errors.NotFound(
                f"no span of trace {trace_id} is known: failed calls keep their spans, "
                "successful ones only in sampled traces (span_sample_rate), for "
                "span_retention_seconds",
                resource=errors.Resource("trace", trace_id),
            )
        spans.sort(key=lambda s: (s.start_time.ToNanoseconds(), s.span_id))
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
        return operations_pb2.LookupTraceResponse(
            trace_id=trace_id,
            spans=spans,
            complete=not pending and len(roots) == 1,
            pending_hospital_ids=pending,
        )


def hospitals_of(spans: Sequence[operations_pb2.Span]) -> list[str]:
    """The hospitals a trace's spans concern."""
    return sorted({s.hospital_id for s in spans if s.hospital_id})
