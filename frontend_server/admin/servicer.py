"""``hplus.hospital.v1.EdgeAdminService``: what the cloud may ask an edge about itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import timestamp_pb2

from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from mesh.version import CONTRACT_RELEASE, SOFTWARE_VERSION

__all__ = ["EdgeAdminServicer"]


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class EdgeAdminServicer(admin_pb2_grpc.EdgeAdminServiceServicer):
    """Answers the cloud's questions about this edge.

    Args:
        hospital_id: the hospital this edge serves.
        edge_id: this edge process.
        services: full names of the services this edge serves (for ``services``).
        components: returns the current state of each component (dialer, queue, adapter).
        started: when the process started.
    """

    def __init__(
        self,
        *,
        hospital_id: str,
        edge_id: str,
        services: Callable[[], Sequence[str]],
        components: Callable[[], Sequence[admin_pb2.Component]] = lambda: (),
        started: dt.datetime | None = None,
    ) -> None:
        self._hospital_id = hospital_id
        self._edge_id = edge_id
        self._services = services
        self._components = components
        self._started = started or dt.datetime.now(dt.UTC)

    async def GetEdgeInfo(
        self,
        request: admin_pb2.GetEdgeInfoRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.GetEdgeInfoRequest, admin_pb2.GetEdgeInfoResponse
        ],
    ) -> admin_pb2.GetEdgeInfoResponse:
        """Versions, contract release, services, components and clock of this edge."""
        started = timestamp_pb2.Timestamp()
        started.FromDatetime(self._started)
        return admin_pb2.GetEdgeInfoResponse(
            hospital_id=self._hospital_id,
            edge_id=self._edge_id,
            software_version=SOFTWARE_VERSION,
            contract_release=CONTRACT_RELEASE,
            services=sorted(self._services()),
            start_time=started,
            edge_time=_now(),
            components=list(self._components()),
        )

    async def LookupTrace(
        self,
        request: admin_pb2.LookupTraceRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.LookupTraceRequest, admin_pb2.LookupTraceResponse
        ],
    ) -> admin_pb2.LookupTraceResponse:
        """Not built yet: this edge records no spans. Says so rather than answer empty."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "trace lookup: this edge does not record spans yet"
        )
        raise AssertionError("unreachable")

    async def GetConfig(
        self,
        request: admin_pb2.GetConfigRequest,
        context: grpc.aio.ServicerContext[admin_pb2.GetConfigRequest, admin_pb2.GetConfigResponse],
    ) -> admin_pb2.GetConfigResponse:
        """Not built yet: configuration profiles arrive with the HIS adapters."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "config: this edge runs without a profile yet"
        )
        raise AssertionError("unreachable")

    async def ApplyConfig(
        self,
        request: admin_pb2.ApplyConfigRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.ApplyConfigRequest, admin_pb2.ApplyConfigResponse
        ],
    ) -> admin_pb2.ApplyConfigResponse:
        """Not built yet: configuration profiles arrive with the HIS adapters."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "config: this edge runs without a profile yet"
        )
        raise AssertionError("unreachable")
