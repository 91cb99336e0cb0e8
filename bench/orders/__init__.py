"""BookAppointment + PayOrder through the order coordinator vs the same hospital calls direct.

`platform` (a node and, per simulated hospital, its HIS simulator and edge in one process,
with accounts that bound patients) is shared with the chaos run (`bench.chaos`).
"""

from __future__ import annotations

from bench.orders._run import SITES, Bench, Hospital, Site, platform, rid

__all__ = ["SITES", "Bench", "Hospital", "Site", "platform", "rid"]
