"""``hplus trace REQUEST_ID``: one request's spans across nodes, the edge and the HIS."""

from __future__ import annotations

import argparse
from typing import Any

from tools.cli._base import EXIT_BAD_INPUT, CliError, Parser
from tools.cli._cloud import _NODE_HINT, _internal
from tools.cli._node import config_flags, failure, run_on_node

__all__ = ["register", "render_trace"]


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
    p.add_argument(
        "request_id",
        metavar="REQUEST_ID",
        help="32 hex digits (the x-request-id an app received; a traceparent works too)",
    )
    p.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    p.set_defaults(func=_trace)


def render_trace(answer: Any) -> list[str]:
    """The lines ``hplus trace`` prints for a ``LookupTraceResponse``."""
    from cloud.traces import trace_tree

    tree = trace_tree(answer)
    first = tree.started.isoformat(timespec="milliseconds")
    lines = [f"trace {tree.trace_id}  started {first}  {len(tree.hops)} span(s)"]
    for hop in tree.hops:
        code = "OK" if hop.ok else f"code {hop.span.status.code}"
        line = (
            f"{'  ' * (hop.depth + 1)}{hop.name}  [{hop.tier}:{hop.node}]"
            f"  +{hop.offset_ms:.1f}ms  {hop.duration_ms:.1f}ms  {code}"
        )
        if hop.message:
            line += f": {hop.message}"
        if hop.culprit:
            line += "   <== failed here"
        lines.append(line)
    if tree.incomplete:
        lines.append(f"incomplete: {tree.incomplete}")
    return lines


def _trace(args: argparse.Namespace) -> int:
    from cloud.gateway import INTERNAL_AUTH_KEY
    from cloud.traces import REQUEST_ID_FORMAT, parse_request_id
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
    from mesh import errors

    request_id = parse_request_id(args.request_id)
    if request_id is None:
        raise CliError(
            f"REQUEST_ID: {args.request_id!r} is not a request id; expected {REQUEST_ID_FORMAT}",
            exit_code=EXIT_BAD_INPUT,
        )
    target, creds, secret = _internal(args)

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
