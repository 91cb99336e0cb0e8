"""Traces on the cloud side.

The node's span store and the lookup that joins one trace across nodes and edges
(``OperationsService.LookupTrace``).
"""

from __future__ import annotations

from cloud.traces._lookup import SCOPE_KEY, TraceLookup, span_of_record
from cloud.traces._store import NodeSpanStore, migrate_traces

__all__ = ["SCOPE_KEY", "NodeSpanStore", "TraceLookup", "migrate_traces", "span_of_record"]
