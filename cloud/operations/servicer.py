"""``hplus.cloud.v1.OperationsService``: tunnels across every node, and actions on them.

Connected hospitals, refused duplicate edge ids, closing a revoked credential's tunnels,
and the liveness probes peer nodes ask for.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from cloud.errors import CLOUD_ERRORS
from cloud.fleet import CredentialStore
from cloud.gateway import RevocationWatcher
from cloud.presence import EdgeConflicts, Presence, TunnelRecord
from cloud.traces import SCOPE_KEY, TraceLookup
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from mesh import errors
from mesh.tunnel import TunnelGateway

__all__ = ["OperationsServicer"]

_MAX_PAGE = 500
_DEFAULT_WAIT = 5.0
_MAX_WAIT = 60.0


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _connection(r: TunnelRecord) -> operations_pb2.HospitalConnection:
    conn = operations_pb2.HospitalConnection(
        hospital_id=r.hospital_id,
        edge_id=r.edge_id,
        edge_version=r.edge_version,
        contract_release=r.contract_release,
        protocol_revision=r.revision,
        gateway_node=r.node_id,
        session_id=r.session_id,
        connect_time=_ts(r.connected_since),
        in_flight_calls=r.in_flight,
        last_seen_time=_ts(r.last_seen),
        warnings=list(r.warnings),
        credential_id=r.credential_id,
        connection_index=r.connection_index,
        peer=r.peer,
    )
    if r.rtt_ms is not None:
        rtt = duration_pb2.Duration()
        rtt.FromMicroseconds(int(r.rtt_ms * 1000))
        conn.rtt.CopyFrom(rtt)
    return conn


def _conflict(c: EdgeConflicts) -> operations_pb2.EdgeConflict:
    last = c.last
    return operations_pb2.EdgeConflict(
        hospital_id=c.hospital_id,
        refused_tunnels=c.refused,
        last_time=_ts(last.at),
        edge_id=last.edge_id,
        connection_index=last.connection_index,
        peer=last.peer,
        credential_id=last.credential_id,
        refused_by_node=last.node_id,
        holder_session_id=last.holder_session_id,
        holder_node=last.holder_node_id,
        holder_peer=last.holder_peer,
        holder_connect_time=_ts(last.holder_since),
    )


@CLOUD_ERRORS.servicer
class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    """Answers operators from tunnel presence (every node's, when presence is Redis).

    Args:
        presence: the presence store all gateway nodes publish to.
        credentials: the fleet's credentials (for revocations).
        revocations: closes revoked credentials' tunnels across the cloud.
        gateway: this node's tunnel gateway (for peers' liveness probes).
        traces: joins one trace across nodes and edges; ``None`` answers UNIMPLEMENTED.
        reconcile: runs a reconciliation (`cloud.reconcile.Reconciler.answer`); None when
            the node has no reconciliation (UNIMPLEMENTED).
    """

    def __init__(
        self,
        presence: Presence,
        *,
        credentials: CredentialStore,
        revocations: RevocationWatcher,
        gateway: TunnelGateway,
        traces: TraceLookup | None = None,
        reconcile: Callable[
            [operations_pb2.ReconcileRequest], Awaitable[operations_pb2.ReconcileResponse]
        ]
        | None = None,
    ) -> None:
        self._traces = traces
        self._reconcile = reconcile
        self._presence = presence
        self._credentials = credentials
        self._revocations = revocations
        self._gateway = gateway

    async def ListConnectedHospitals(
        self,
        request: operations_pb2.ListConnectedHospitalsRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.ListConnectedHospitalsRequest,
            operations_pb2.ListConnectedHospitalsResponse,
        ],
    ) -> operations_pb2.ListConnectedHospitalsResponse:
        """One row per live tunnel, ordered by hospital, node and session; paged."""
        if request.page_size < 0:
            raise errors.InvalidArgument(field_violations=[("page_size", "must be >= 0")])
        offset = _offset(request.page_token)
        records = await self._presence.all()
        wanted = [
            r
            for r in records
            if (not request.hospital_id or r.hospital_id == request.hospital_id)
            and (not request.gateway_node or r.node_id == request.gateway_node)
            and (not request.edge_version or r.edge_version == request.edge_version)
            and (not request.contract_release or r.contract_release == request.contract_release)
            and (not request.credential_id or r.credential_id == request.credential_id)
        ]
        wanted.sort(key=lambda r: (r.hospital_id, r.node_id, r.connection_index, r.session_id))
        size = min(request.page_size or 100, _MAX_PAGE)
        page = wanted[offset : offset + size]
        nxt = offset + size
        return operations_pb2.ListConnectedHospitalsResponse(
            connections=[_connection(r) for r in page],
            next_page_token=base64.urlsafe_b64encode(str(nxt).encode()).decode()
            if nxt < len(wanted)
            else "",
            total_hospitals=len({r.hospital_id for r in wanted}),
        )

    async def LookupTrace(
        self,
        request: operations_pb2.LookupTraceRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.LookupTraceRequest, operations_pb2.LookupTraceResponse
        ],
    ) -> operations_pb2.LookupTraceResponse:
        """Every span of the trace across nodes and edges (a peer's ``local`` scope: its own)."""
        if self._traces is None:
            raise errors.Unimplemented("trace lookup is not available: this node keeps no spans")
        metadata = context.invocation_metadata() or ()
        local = any(k == SCOPE_KEY and v == "local" for k, v in metadata)
        return await self._traces.lookup(request.trace_id, local_only=local)

    async def CloseCredentialTunnels(
        self,
        request: operations_pb2.CloseCredentialTunnelsRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.CloseCredentialTunnelsRequest,
            operations_pb2.CloseCredentialTunnelsResponse,
        ],
    ) -> operations_pb2.CloseCredentialTunnelsResponse:
        """Close a revoked credential's tunnels on every node; report how many."""
        if not request.credential_id:
            raise errors.InvalidArgument(field_violations=[("credential_id", "required")])
        wait = request.wait.ToNanoseconds() / 1e9 if request.HasField("wait") else _DEFAULT_WAIT
        if not 0 <= wait <= _MAX_WAIT:
            raise errors.InvalidArgument(
                field_violations=[("wait", f"must be within 0..{_MAX_WAIT:.0f}s")]
            )
        credential = await self._credentials.get(request.credential_id)
        if credential is None:
            raise errors.NotFound(
                f"no credential with id {request.credential_id!r}",
                resource=errors.Resource("credential", request.credential_id),
            )
        if credential.revoked_at is None:
            raise errors.FailedPrecondition(
                f"credential {credential.credential_id} is not revoked: revoke it first",
                reason="CREDENTIAL_NOT_REVOKED",
            )
        report = await self._revocations.close_everywhere(credential, wait=wait)
        return operations_pb2.CloseCredentialTunnelsResponse(
            credential_id=credential.credential_id,
            hospital_id=credential.hospital_id,
            closed_tunnels=report.closed,
            closed_by_node=report.closed_by_node,
            remaining=[_connection(r) for r in report.remaining],
        )

    async def ProbeTunnel(
        self,
        request: operations_pb2.ProbeTunnelRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.ProbeTunnelRequest, operations_pb2.ProbeTunnelResponse
        ],
    ) -> operations_pb2.ProbeTunnelResponse:
        """Is the tunnel held here still alive? A silent one is replaced."""
        if not request.session_id:
            raise errors.InvalidArgument(field_violations=[("session_id", "required")])
        holder = await self._gateway.challenge(
            request.session_id, claimant=request.claimant or "a peer node"
        )
        if holder is None:
            return operations_pb2.ProbeTunnelResponse(live=False)
        return operations_pb2.ProbeTunnelResponse(
            live=True,
            connect_time=_ts(holder.since),
            peer=holder.peer,
            gateway_node=holder.node_id,
        )

    async def ListEdgeConflicts(
        self,
        request: operations_pb2.ListEdgeConflictsRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.ListEdgeConflictsRequest, operations_pb2.ListEdgeConflictsResponse
        ],
    ) -> operations_pb2.ListEdgeConflictsResponse:
        """Refused duplicate tunnels per hospital, with the last one."""
        found = await self._presence.conflicts(request.hospital_id or None)
        return operations_pb2.ListEdgeConflictsResponse(conflicts=[_conflict(c) for c in found])

    async def Reconcile(
        self,
        request: operations_pb2.ReconcileRequest,
        context: grpc.aio.ServicerContext[
            operations_pb2.ReconcileRequest, operations_pb2.ReconcileResponse
        ],
    ) -> operations_pb2.ReconcileResponse:
        """Runs the three-way reconciliation of one business date on this node."""
        if self._reconcile is None:
            raise errors.Unimplemented("reconciliation is not available on this node")
        return await self._reconcile(request)


def _offset(token: str) -> int:
    """The offset a page token stands for (0 for the first page)."""
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token))
    except ValueError:  # binascii.Error is one too
        offset = -1
    if offset < 0:
        raise errors.InvalidArgument(field_violations=[("page_token", "not a token we issued")])
    return offset
