"""The public names of the EdgeService parts (cloud and edge), pinned."""

from __future__ import annotations

import cloud.edge_api
import cloud.edgeconfig
import cloud.monitoring
import cloud.reports
import frontend_server.uplink


def test_public_surfaces_are_pinned() -> None:
    assert cloud.edge_api.__all__ == [
        "Accepted",
        "EdgeApiServicer",
        "EdgeAuth",
        "EdgeCaller",
        "EdgeHandlers",
        "Handler",
        "Rejected",
        "ResultSink",
        "StreamHandler",
        "TaskResultsHandler",
        "Verdict",
    ]
    assert cloud.monitoring.__all__ == [
        "INTERFACES",
        "Alert",
        "Availability",
        "EdgeHealth",
        "HealthMonitor",
        "ProbeResult",
        "Prober",
        "evaluate",
        "fingerprint",
        "migrate_monitoring",
        "read_alerts",
        "read_availability",
        "read_health",
    ]
    assert cloud.reports.__all__ == [
        "KEY_PREFIX",
        "ReportApi",
        "decode_report_id",
        "encode_report_id",
        "migrate_reports",
    ]
    assert cloud.edgeconfig.__all__ == [
        "EdgeApiConfig",
        "HealthConfig",
        "ProbeCase",
        "ProbesConfig",
        "ReportsConfig",
        "Thresholds",
        "from_file",
    ]
    assert frontend_server.uplink.__all__ == [
        "HisCheck",
        "HisStatus",
        "Uplink",
        "UplinkConfig",
        "task_result",
    ]
