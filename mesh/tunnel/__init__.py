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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from mesh.tunnel._server import TunnelServer, TunnelServicerContext, call_time_left
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
    "call_time_left",
    "memory_transport_pair",
]

# The names load on first use (PEP 562), so a module that needs only the settings
# (`TunnelConfig` in cloud.config) does not load grpc and the whole engine with them.
_WHERE = {
    "Authenticator": "mesh.tunnel._gateway",
    "CallHook": "mesh.tunnel._hooks",
    "CallInfo": "mesh.tunnel._hooks",
    "Claim": "mesh.tunnel._gateway",
    "CloudGrpcTransport": "mesh.tunnel._transport",
    "ClusterView": "mesh.tunnel._gateway",
    "EdgeConflict": "mesh.tunnel._gateway",
    "EdgeGrpcTransport": "mesh.tunnel._transport",
    "EdgeIdentity": "mesh.tunnel._edge",
    "EdgeTunnel": "mesh.tunnel._edge",
    "Holder": "mesh.tunnel._gateway",
    "HookRejection": "mesh.tunnel._hooks",
    "MemoryTransport": "mesh.tunnel._transport",
    "Principal": "mesh.tunnel._gateway",
    "ProtocolViolation": "mesh.tunnel._errors",
    "Role": "mesh.tunnel._session",
    "SUPPORTED_REVISIONS": "mesh.tunnel._config",
    "Session": "mesh.tunnel._session",
    "SessionPicker": "mesh.tunnel._channel",
    "Transport": "mesh.tunnel._transport",
    "TransportError": "mesh.tunnel._transport",
    "TunnelChannel": "mesh.tunnel._channel",
    "TunnelClosed": "mesh.tunnel._errors",
    "TunnelConfig": "mesh.tunnel._config",
    "TunnelGateway": "mesh.tunnel._gateway",
    "TunnelOrigin": "mesh.tunnel._gateway",
    "TunnelRefused": "mesh.tunnel._errors",
    "TunnelServer": "mesh.tunnel._server",
    "TunnelServicerContext": "mesh.tunnel._server",
    "bearer_token": "mesh.tunnel._gateway",
    "call_time_left": "mesh.tunnel._server",
    "memory_transport_pair": "mesh.tunnel._transport",
}


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
