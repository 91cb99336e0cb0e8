"""``hplus.cloud.v1.OperationsService``: connected hospitals across every node."""

from __future__ import annotations

import base64
import datetime as dt

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from cloud.errors import CLOUD_ERRORS
from cloud.presence import Presence, TunnelRecord
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from mesh import errors

__all__ = ["OperationsServicer"]

_MAX_PAGE = 500


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
    )
    if r.rtt_ms is not None:
        rtt = duration_pb2.Duration()
        rtt.FromMicroseconds(int(r.rtt_ms * 1000))
        conn.rtt.CopyFrom(rtt)
    return conn


@CLOUD_ERRORS.servicer
class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    """Answers operators from tunnel presence (every node's, when presence is Redis).

    Args:
        presence: the presence store all gateway nodes publish to.
    """

    def __init__(self, presence: Presence) -> None:
        self._presence = presence

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
        """Not built yet: spans are not collected. Says so instead of returning nothing."""
        raise errors.Unimplemented(
            "trace lookup is not available yet: this node does not collect spans"
        )


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
