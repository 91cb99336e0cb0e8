"""The edge's traces.

Spans kept in a bounded SQLite ring buffer, served to the cloud by
``EdgeAdminService.LookupTrace``, and the HIS calls' spans, metrics and failure logs.
"""

from __future__ import annotations

from frontend_server.traces._his import ObservedAdapter, observed
from frontend_server.traces._ring import SpanRing

__all__ = ["ObservedAdapter", "SpanRing", "observed"]
