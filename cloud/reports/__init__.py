"""Patients' reports through the edges' pending-task queues (issue 12 item 5).

`ReportApi` answers the patient API's ListReports and GetReport: it submits a lookup task
to the hospital's edge and answers ``lookup_pending`` until the edge pushes the result
through ``EdgeService.ReportTaskResults`` (`ReportApi.on_result`, the result sink for keys
``rpt-…``); results are kept for ``[reports] result_ttl`` and then purged.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.reports._api import KEY_PREFIX, ReportApi, decode_report_id, encode_report_id

__all__ = ["KEY_PREFIX", "ReportApi", "decode_report_id", "encode_report_id", "migrate_reports"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_reports(engine: AsyncEngine) -> None:
    """Bring the reports database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_reports")
