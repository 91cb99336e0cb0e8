"""Traces on the cloud side.

The node's span store, the lookup that joins one trace across nodes and edges
(``OperationsService.LookupTrace``), and the tree of hops both ``hplus trace`` and the
dashboard's trace page show (`trace_tree`).
"""

from __future__ import annotations

from cloud.traces._lookup import SCOPE_KEY, TraceLookup, span_of_record
from cloud.traces._store import FailedCall, NodeSpanStore, migrate_traces
from cloud.traces._tree import (
    REQUEST_ID_FORMAT,
    Hop,
    TraceTree,
    failing_span,
    parse_request_id,
    trace_tree,
)

__all__ = [
    "REQUEST_ID_FORMAT",
    "SCOPE_KEY",
    "FailedCall",
    "Hop",
    "NodeSpanStore",
    "TraceLookup",
    "TraceTree",
    "failing_span",
    "migrate_traces",
    "parse_request_id",
    "span_of_record",
    "trace_tree",
]
