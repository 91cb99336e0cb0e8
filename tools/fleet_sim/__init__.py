"""The fleet simulator: thousands of light hospital edges in one process, for scale tests.

``python -m tools.fleet_sim --hospitals 2000 --cloud localhost:50051 --node-data-dir var``
starts N simulated edges, each a real ``EdgeTunnel`` (held by the real edge's dialer) with
its own credential, serving hospital services over an in-memory HIS: a seeded directory
(doctors, days, slots) that changes at a configurable rate, patients, edge admin. Faults
(offline, slow, malformed feed) and change bursts are commanded per hospital or for a
fraction of the fleet through a small HTTP control API (:mod:`tools.fleet_sim._control`).
The hospitals' master data can be written as TOML for the cloud's read store.
"""

from __future__ import annotations

from tools.fleet_sim._cli import main
from tools.fleet_sim._control import control_app
from tools.fleet_sim._credentials import issue_credentials, read_credentials
from tools.fleet_sim._edge import EdgeFaults, SimEdge
from tools.fleet_sim._fleet import FAULTS, Fleet, FleetConfig, FleetError, rss_kib
from tools.fleet_sim._his import DEPARTMENTS, DirectoryShape, MemoryHis
from tools.fleet_sim._hospitals import (
    SimHospital,
    fleet_hospitals,
    hospitals_toml,
    write_hospitals_toml,
)
from tools.fleet_sim._upgrades import (
    BROKEN_MARKER,
    EdgeUplink,
    FleetUpgrades,
    SimSlots,
    UpgradeService,
)

__all__ = [
    "BROKEN_MARKER",
    "DEPARTMENTS",
    "FAULTS",
    "DirectoryShape",
    "EdgeFaults",
    "EdgeUplink",
    "Fleet",
    "FleetConfig",
    "FleetError",
    "FleetUpgrades",
    "MemoryHis",
    "SimEdge",
    "SimHospital",
    "SimSlots",
    "UpgradeService",
    "control_app",
    "fleet_hospitals",
    "hospitals_toml",
    "issue_credentials",
    "main",
    "read_credentials",
    "rss_kib",
    "write_hospitals_toml",
]
