"""The edge's calls to the cloud's ``EdgeService`` over its own outbound connection.

`Uplink` pushes the results of finished pending tasks (deleting them locally only once
the cloud acknowledged them) and reports the edge's health every ``next_report_interval``
and right after a state change; `HisCheck` is the cheap HIS check behind the report's HIS
reachability and GetEdgeInfo's ``his`` component.
"""

from __future__ import annotations

from frontend_server.uplink._his import HisCheck, HisStatus
from frontend_server.uplink._uplink import Uplink, UplinkConfig, task_result

__all__ = ["HisCheck", "HisStatus", "Uplink", "UplinkConfig", "task_result"]
