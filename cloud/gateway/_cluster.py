"""What this node's gateway learns about tunnels on the other nodes (from presence)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import grpc

from cloud.gateway._secret import INTERNAL_AUTH_KEY
from cloud.presence import Presence
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from mesh.tunnel import Claim, Holder

__all__ = ["PresenceCluster"]

log = logging.getLogger(__name__)


class PresenceCluster:
    """A `mesh.tunnel.ClusterView` over presence and the peers' internal endpoints.

    Counting a credential's tunnels elsewhere reads presence (as current as the nodes'
    last updates). An edge key held on another node is checked by asking that node to probe
    its tunnel (``OperationsService.ProbeTunnel``): the node holding a tunnel is the only
    one that can tell whether its edge still answers. A node that cannot be asked is taken
    to be gone (its tunnels are, too), so a reconnecting edge is not locked out.

    Args:
        presence: where every node publishes its tunnels.
        peer_channel: the channel to a peer's internal endpoint, by address
            (`HospitalRouter.peer_channel`).
        node_id: this node's id (its own records are the gateway's business).
        secret: the cluster secret for peers' internal endpoints.
        probe_timeout: deadline of a peer's probe call (its liveness probe plus slack).
    """

    def __init__(
        self,
        presence: Presence,
        peer_channel: Callable[[str], grpc.aio.Channel],
        *,
        node_id: str,
        secret: str,
        probe_timeout: float,
    ) -> None:
        self._presence = presence
        self._peer_channel = peer_channel
        self._node_id = node_id
        self._secret = secret
        self._probe_timeout = probe_timeout

    async def credential_tunnels(self, hospital_id: str, credential_id: str) -> int:
        """Live tunnels of the credential on other nodes."""
        records = await self._presence.lookup(hospital_id)
        return sum(
            1 for r in records if r.node_id != self._node_id and r.credential_id == credential_id
        )

    async def holder(self, claim: Claim) -> Holder | None:
        """A live tunnel on another node holding the claim's edge id and connection index."""
        records = [
            r
            for r in await self._presence.lookup(claim.hospital_id)
            if r.node_id != self._node_id
            and r.edge_id == claim.edge_id
            and r.connection_index == claim.connection_index
        ]
        for record in records:
            stub = operations_pb2_grpc.OperationsServiceStub(
                self._peer_channel(record.node_address)
            )
            try:
                reply = await stub.ProbeTunnel(
                    operations_pb2.ProbeTunnelRequest(
                        hospital_id=record.hospital_id,
                        session_id=record.session_id,
                        claimant=f"a new tunnel from {claim.peer} on node {self._node_id}",
                    ),
                    metadata=((INTERNAL_AUTH_KEY, self._secret),),
                    timeout=self._probe_timeout,
                )
            except grpc.aio.AioRpcError as err:
                log.warning(
                    "node %s did not answer for session %s of %s (%s: %s): taking it as gone",
                    record.node_id,
                    record.session_id,
                    record.hospital_id,
                    err.code().name,
                    err.details(),
                )
                continue
            if reply.live:
                return Holder(
                    session_id=record.session_id,
                    node_id=reply.gateway_node or record.node_id,
                    since=reply.connect_time.ToDatetime(dt.UTC),
                    peer=reply.peer,
                )
        return None
