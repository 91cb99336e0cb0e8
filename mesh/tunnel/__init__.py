"""The hplus reverse tunnel: the cloud calls gRPC services of edges that only dial out.

One engine (`Session`) runs both ends of the ``hplus.tunnel.v1`` protocol over one outer
``TunnelService.Connect`` stream. On the cloud, `TunnelGateway` accepts tunnels and
`TunnelChannel` lets generated stubs call a hospital through them. On the edge, servicers
register on a `TunnelServer` like on a ``grpc.aio`` server and `EdgeTunnel` dials out::

    # cloud
    gateway = TunnelGateway(authenticate=check_credential, node_id="gw-1")
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, grpc_server)
    stub = DirectoryServiceStub(gateway.channel("hospital-42"))

    # edge
    server = TunnelServer()
    add_DirectoryServiceServicer_to_server(DirectoryServicer(), server)
    async with EdgeTunnel(channel, server, credential=token, identity=identity) as tunnel:
        await tunnel.task
"""

from __future__ import annotations

from mesh.tunnel._channel import SessionPicker, TunnelChannel
from mesh.tunnel._config import SUPPORTED_REVISIONS, TunnelConfig
from mesh.tunnel._edge import EdgeIdentity, EdgeTunnel
from mesh.tunnel._errors import ProtocolViolation, TunnelClosed, TunnelRefused
from mesh.tunnel._gateway import (
    Authenticator,
    Claim,
    ClusterView,
    EdgeConflict,
    Holder,
    Principal,
    TunnelGateway,
    TunnelOrigin,
    bearer_token,
)
from mesh.tunnel._hooks import CallHook, CallInfo, HookRejection
from mesh.tunnel._server import TunnelServer, TunnelServicerContext
from mesh.tunnel._session import Role, Session
from mesh.tunnel._transport import (
    CloudGrpcTransport,
    EdgeGrpcTransport,
    MemoryTransport,
    Transport,
    TransportError,
    memory_transport_pair,
)

__all__ = [
    "SUPPORTED_REVISIONS",
    "Authenticator",
    "CallHook",
    "CallInfo",
    "Claim",
    "CloudGrpcTransport",
    "ClusterView",
    "EdgeConflict",
    "EdgeGrpcTransport",
    "EdgeIdentity",
    "EdgeTunnel",
    "Holder",
    "HookRejection",
    "MemoryTransport",
    "Principal",
    "ProtocolViolation",
    "Role",
    "Session",
    "SessionPicker",
    "Transport",
    "TransportError",
    "TunnelChannel",
    "TunnelClosed",
    "TunnelConfig",
    "TunnelGateway",
    "TunnelOrigin",
    "TunnelRefused",
    "TunnelServer",
    "TunnelServicerContext",
    "bearer_token",
    "memory_transport_pair",
]
