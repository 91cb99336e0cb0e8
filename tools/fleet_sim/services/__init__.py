"""The hospital services a simulated edge offers, one module each.

Each module has ``register(server, edge)``, which adds its servicer for one simulated edge
to that edge's tunnel registrar; :data:`SERVICES` lists them. A new service (orders,
upgrades) is a new module added to the list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tools.fleet_sim.services import _admin, _directory, _patient
from tools.fleet_sim.services._directory import FEED_FAULTS, FleetDirectoryServicer
from tools.fleet_sim.services._patient import FleetPatientServicer, PatientBook

if TYPE_CHECKING:
    from tools.fleet_sim._edge import SimEdge

__all__ = [
    "FEED_FAULTS",
    "SERVICES",
    "FleetDirectoryServicer",
    "FleetPatientServicer",
    "PatientBook",
]

SERVICES: tuple[Callable[[Any, SimEdge], None], ...] = (
    _directory.register,
    _patient.register,
    _admin.register,
)
"""Registrars of the services every simulated edge serves."""
