"""How the sync engine reaches hospitals: a small interface and its tunnel implementation.

`RouterSource` calls hospitals through the node's tunnels, local or forwarded.

The interface is the seam tests and benchmarks replace (`cloud.sync.testing`); the engine
never sees gRPC.
"""

from __future__ import annotations

import enum
from typing import Protocol

import grpc

from cloud.gateway import HospitalRouter, HospitalUnavailable
from cloud.presence import Presence, PresenceUnavailable
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from mesh.tunnel import TunnelGateway

__all__ = ["HospitalSource", "Locality", "RouterSource", "SourceError"]


class Locality(enum.Enum):
    """Where a hospital's tunnel is, as seen from this node."""

    LOCAL = "local"
    """On this node: this node syncs it."""
    REMOTE = "remote"
    """On another node only: that node syncs it."""
    OFFLINE = "offline"
    """Nowhere: the hospital is shown stale until it comes back."""
    UNKNOWN = "unknown"
    """Presence cannot be read (Redis down): skip it this round, mark nothing."""


class SourceError(Exception):
    """A call to a hospital failed (unreachable, deadline exceeded, refused).

    Args:
        code: the gRPC status code name, e.g. ``UNAVAILABLE``.
        message: what the hospital or the transport said.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HospitalSource(Protocol):
    """What the sync engine needs of hospitals."""

    async def locality(self, hospital_id: str) -> Locality:
        """Where the hospital's tunnel is."""
        ...

    # ``time_limit``: seconds the call may take (its gRPC deadline).

    async def get_changes(
        self, hospital_id: str, request: directory_pb2.GetChangesRequest, *, time_limit: float
    ) -> directory_pb2.GetChangesResponse:
        """``DirectoryService/GetChanges`` of the hospital.

        Raises:
            SourceError: the call failed.
        """
        ...

    async def get_digest(
        self,
        hospital_id: str,
        request: directory_pb2.GetDirectoryDigestRequest,
        *,
        time_limit: float,
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """``DirectoryService/GetDirectoryDigest`` of the hospital.

        Raises:
            SourceError: the call failed.
        """
        ...


class RouterSource:
    """Hospitals through this node's tunnels (or a peer's, forwarded), as the cloud calls them.

    Args:
        gateway: this node's tunnel gateway (which tunnels are local).
        presence: every node's tunnels.
        router: routes a call to the hospital's tunnel.
        node_id: this node's id.
    """

    def __init__(
        self, gateway: TunnelGateway, presence: Presence, router: HospitalRouter, *, node_id: str
    ) -> None:
        self._gateway = gateway
        self._presence = presence
        self._router = router
        self._node_id = node_id

    async def locality(self, hospital_id: str) -> Locality:
        """Local tunnels first (no Redis round trip), then presence."""
        if any(s.accepting_calls for s in self._gateway.sessions(hospital_id)):
            return Locality.LOCAL
        try:
            records = await self._presence.lookup(hospital_id)
        except PresenceUnavailable:
            return Locality.UNKNOWN
        return (
            Locality.REMOTE
            if any(r.node_id != self._node_id for r in records)
            else (Locality.OFFLINE)
        )

    async def _stub(self, hospital_id: str) -> directory_pb2_grpc.DirectoryServiceAsyncStub:
        try:
            channel = await self._router.channel_for(hospital_id)
        except HospitalUnavailable as err:
            raise SourceError("UNAVAILABLE", str(err)) from None
        return directory_pb2_grpc.DirectoryServiceStub(channel)

    async def get_changes(
        self, hospital_id: str, request: directory_pb2.GetChangesRequest, *, time_limit: float
    ) -> directory_pb2.GetChangesResponse:
        """One page of the hospital's change feed."""
        stub = await self._stub(hospital_id)
        try:
            return await stub.GetChanges(request, timeout=time_limit)
        except grpc.aio.AioRpcError as err:
            raise SourceError(err.code().name, err.details() or "") from None

    async def get_digest(
        self,
        hospital_id: str,
        request: directory_pb2.GetDirectoryDigestRequest,
        *,
        time_limit: float,
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """The hospital's directory digests."""
        stub = await self._stub(hospital_id)
        try:
            return await stub.GetDirectoryDigest(request, timeout=time_limit)
        except grpc.aio.AioRpcError as err:
            raise SourceError(err.code().name, err.details() or "") from None
