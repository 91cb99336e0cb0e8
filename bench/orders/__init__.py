"""BookAppointment + PayOrder through the order coordinator vs the same hospital calls direct.

`platform` (a node, an edge and the REST HIS simulator in one process, with accounts that
bound patients) is shared with the chaos run (`bench.chaos`).
"""

from __future__ import annotations

from bench.orders._run import Bench, platform, rid

__all__ = ["Bench", "platform", "rid"]
