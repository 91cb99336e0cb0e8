"""``EdgeAdminService`` of a simulated edge: the real edge's servicer, without a profile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from frontend_server.admin import EdgeAdminServicer
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc

if TYPE_CHECKING:
    from tools.fleet_sim._edge import SimEdge

__all__ = ["register"]


def _components(edge: SimEdge) -> list[admin_pb2.Component]:
    """The tunnel's state, and the simulated HIS's (degraded while a fault is in force)."""
    tunnel = (
        admin_pb2.COMPONENT_STATE_SERVING
        if edge.connected
        else admin_pb2.COMPONENT_STATE_NOT_SERVING
    )
    faults = edge.faults.describe()
    his = admin_pb2.COMPONENT_STATE_DEGRADED if faults else admin_pb2.COMPONENT_STATE_SERVING
    return [
        admin_pb2.Component(name="tunnel", state=tunnel),
        admin_pb2.Component(name="his", state=his, detail=", ".join(faults) or "in memory"),
    ]


def register(server: Any, edge: SimEdge) -> None:
    """Adds the edge-admin service of ``edge`` to ``server``."""
    admin_pb2_grpc.add_EdgeAdminServiceServicer_to_server(
        EdgeAdminServicer(
            hospital_id=edge.hospital.hospital_id,
            edge_id=edge.edge_id,
            services=lambda: server.services,
            components=lambda: _components(edge),
        ),
        server,
    )
