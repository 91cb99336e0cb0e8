"""The cloud's ``hplus.cloud.v1.EdgeService``: what front-end servers call on the cloud.

`EdgeApiServicer` serves it on the node's public endpoint (beside ``TunnelService``),
authenticating every call with the hospital credential the tunnel uses (`EdgeAuth`: a
revoked credential fails its next call), bounding what a hospital can make the node hold
(request size, results per call and their bytes, calls per minute), and handing each RPC
to a pluggable handler (`EdgeHandlers`). `TaskResultsHandler` implements
ReportTaskResults: idempotent by ``request_id``, each result routed by its idempotency
key's prefix to the part that submitted the task (`ResultSink`).
"""

from __future__ import annotations

from cloud.edge_api._auth import EdgeAuth, EdgeCaller
from cloud.edge_api._results import Accepted, Rejected, ResultSink, TaskResultsHandler, Verdict
from cloud.edge_api._servicer import EdgeApiServicer, EdgeHandlers, Handler, StreamHandler

__all__ = [
    "Accepted",
    "EdgeApiServicer",
    "EdgeAuth",
    "EdgeCaller",
    "EdgeHandlers",
    "Handler",
    "Rejected",
    "ResultSink",
    "StreamHandler",
    "TaskResultsHandler",
    "Verdict",
]
