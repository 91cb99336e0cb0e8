"""``hplus trace REQUEST_ID``: one request's spans across nodes, the edge and the HIS."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

from tools.cli._base import Parser
from tools.cli._cloud import _NODE_HINT, _internal
from tools.cli._node import config_flags, failure, run_on_node

__all__ = ["register", "render_trace"]

_TIERS = {0: "?", 1: "cloud", 2: "edge", 3: "his"}


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``trace`` command."""
    p = sub.add_parser(
        "trace",
        help="print one request's spans as a tree across nodes, the edge and the HIS",
        description="Ask a node (internal endpoint, cluster secret) for every span of a "
        "request id (the x-request-id an app received, a W3C trace id): the node joins its "
        "own, its peers' and the hospital edge's (fetched through the tunnel), and this "
        "prints them as a tree with timings, marking the hop where the call failed.",
    )
    config_flags(p)
    p.add_argument("request_id", metavar="REQUEST_ID", help="32 hex digits (W3C trace id)")
    p.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    p.set_defaults(func=_trace)


def _ms(duration: Any) -> str:
    return f"{duration.ToNanoseconds() / 1e6:.1f}ms"


def failing_span(spans: Sequence[Any]) -> str:
    """The span id of the hop where the call failed.

    The earliest failed span none of whose children failed (``""`` when all are OK).
    """
    failed = {s.span_id for s in spans if s.status.code != 0}
    if not failed:
        return ""
    parents = {s.parent_span_id for s in spans if s.span_id in failed}
    leaves = [s for s in spans if s.span_id in failed and s.span_id not in parents]
    return min(leaves, key=lambda s: s.start_time.ToNanoseconds()).span_id if leaves else ""


def render_trace(answer: Any) -> list[str]:
    """The lines ``hplus trace`` prints for a ``LookupTraceResponse``."""
    spans = list(answer.spans)
    ids = {s.span_id for s in spans}
    children: dict[str, list[Any]] = {}
    roots = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in ids:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            roots.append(s)
    start = min(s.start_time.ToNanoseconds() for s in spans)
    culprit = failing_span(spans)
    first = dt.datetime.fromtimestamp(start / 1e9, dt.UTC).isoformat(timespec="milliseconds")
    lines = [f"trace {answer.trace_id}  started {first}  {len(spans)} span(s)"]

    def walk(span: Any, depth: int) -> None:
        offset = (span.start_time.ToNanoseconds() - start) / 1e6
        name = f"{span.service}/{span.method}" if span.method else span.service
        where = f"{_TIERS.get(span.tier, '?')}:{span.node or '-'}"
        code = "OK" if span.status.code == 0 else f"code {span.status.code}"
        line = f"{'  ' * depth}{name}  [{where}]  +{offset:.1f}ms  {_ms(span.duration)}  {code}"
        if span.status.code != 0 and span.status.message:
            line += f": {span.status.message}"
        if span.span_id == culprit:
            line += "   <== failed here"
        lines.append(line)
        for child in sorted(
            children.get(span.span_id, []), key=lambda c: c.start_time.ToNanoseconds()
        ):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    if not answer.complete:
        pending = ", ".join(answer.pending_hospital_ids)
        lines.append(
            "incomplete: "
            + (f"no answer from the edge of {pending}" if pending else "some parents are missing")
        )
    return lines


def _trace(args: argparse.Namespace) -> int:
    from cloud.gateway import INTERNAL_AUTH_KEY
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
    from mesh import errors

    target, creds, secret = _internal(args)
    request_id = args.request_id.strip().lower()

    async def fetch(channel: Any) -> operations_pb2.LookupTraceResponse:
        stub = errors.wrap(operations_pb2_grpc.OperationsServiceStub(channel))
        answer: operations_pb2.LookupTraceResponse = await stub.LookupTrace(
            operations_pb2.LookupTraceRequest(trace_id=request_id),
            metadata=((INTERNAL_AUTH_KEY, secret),),
            timeout=30,
        )
        return answer

    try:
        answer = run_on_node(target, creds, fetch, hint=_NODE_HINT)
    except errors.StatusError as err:
        raise failure(f"trace {request_id}", err) from None
    for line in render_trace(answer):
        print(line)
    return 0
