"""A/B install slots on the edge and the supervisor that switches between them.

`Slots` installs a verified package into the idle slot and records switches, commits and
rollbacks; `Supervisor` runs the edge from its slot and applies the health gate of a
switch; a supervised edge calls `report_healthy` once its tunnel is up and its services
answer, and exits with `EXIT_SWITCH` to be restarted into a new slot.
"""

from __future__ import annotations

from frontend_server.slots._bridge import SlotsBridge
from frontend_server.slots._slots import (
    BASE,
    SLOT_NAMES,
    PendingSwitch,
    SlotError,
    SlotInfo,
    Slots,
)
from frontend_server.slots._supervisor import (
    EXIT_SWITCH,
    HEALTH_FILE_ENV,
    PID_FILE,
    SLOT_ENV,
    Supervisor,
    report_healthy,
)

__all__ = [
    "BASE",
    "EXIT_SWITCH",
    "HEALTH_FILE_ENV",
    "PID_FILE",
    "SLOT_ENV",
    "SLOT_NAMES",
    "PendingSwitch",
    "SlotError",
    "SlotInfo",
    "Slots",
    "SlotsBridge",
    "Supervisor",
    "report_healthy",
]
