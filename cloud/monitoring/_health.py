"""Edge health: the latest report per edge and a bounded history, alerts on thresholds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa
from google.protobuf import duration_pb2, json_format
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.db import writer_turn
from cloud.edgeconfig import HealthConfig, Thresholds
from cloud.monitoring._schema import ALERTS, HEALTH, HEALTH_HISTORY
from hplus.cloud.v1 import edge_pb2

__all__ = ["Alert", "EdgeHealth", "HealthMonitor", "evaluate"]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class _Edge(Protocol):
    @property
    def hospital_id(self) -> str: ...

    @property
    def edge_id(self) -> str: ...


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def evaluate(report: edge_pb2.ReportHealthRequest, limits: Thresholds) -> dict[str, str]:
    """The alerts a report raises under ``limits``: kind → what is wrong (no patient data).

    Kinds: ``BACKLOG``, ``TASK_AGE``, ``HIS_UNREACHABLE``, ``DISK_LOW``.
    """
    found: dict[str, str] = {}
    over = [q for q in report.queues if q.backlog > limits.max_backlog]
    if over:
        found["BACKLOG"] = "; ".join(
            f"queue {q.queue or '-'}: {q.backlog} waiting (limit {limits.max_backlog})"
            for q in over
        )
    old = [q for q in report.queues if _seconds(q.oldest_age) > limits.max_oldest_age]
    if old:
        found["TASK_AGE"] = "; ".join(
            f"queue {q.queue or '-'}: oldest waiting {_seconds(q.oldest_age):.0f}s "
            f"(limit {limits.max_oldest_age:.0f}s)"
            for q in old
        )
    if limits.his_unreachable:
        down = [
            i
            for i in report.his_interfaces
            if i.reachability == edge_pb2.HIS_REACHABILITY_UNREACHABLE
        ]
        if down:
            found["HIS_UNREACHABLE"] = "; ".join(
                f"{i.interface or '-'} ({i.adapter or '?'})"
                + (f": {i.last_error.message[:120]}" if i.last_error.message else "")
                for i in down
            )
    res = report.resources
    if res.disk_total_bytes > 0 and res.disk_free_bytes < limits.min_disk_free_bytes:
        found["DISK_LOW"] = (
            f"{res.disk_free_bytes // (1024 * 1024)} MiB free "
            f"(limit {limits.min_disk_free_bytes // (1024 * 1024)} MiB)"
        )
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert, open or cleared."""

    hospital_id: str
    """The hospital."""
    edge_id: str
    """The edge whose report raised it."""
    kind: str
    """``BACKLOG``, ``TASK_AGE``, ``HIS_UNREACHABLE``, ``DISK_LOW`` or ``SILENT``."""
    detail: str
    """What was wrong when it was raised."""
    raised_at: dt.datetime
    """When it was raised."""
    cleared_at: dt.datetime | None
    """When it cleared; ``None`` while open."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeHealth:
    """The latest health of one edge, as the CLI and GetEdgeInfo-like views show it."""

    hospital_id: str
    """The hospital."""
    edge_id: str
    """The edge."""
    received_at: dt.datetime
    """When the node received the report."""
    stale: bool
    """No report for longer than the hospital's ``stale_after``."""
    report: edge_pb2.ReportHealthRequest
    """The report itself."""
    alerts: tuple[Alert, ...]
    """Open alerts (``SILENT`` added when stale)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (proto3 JSON of the report)."""
        return {
            "hospital_id": self.hospital_id,
            "edge_id": self.edge_id,
            "received_at": self.received_at.isoformat(),
            "stale": self.stale,
            "report": json_format.MessageToDict(self.report),
            "alerts": [
                {"kind": a.kind, "detail": a.detail, "raised_at": a.raised_at.isoformat()}
                for a in self.alerts
            ],
        }


class HealthMonitor:
    """Stores edges' health reports and keeps their alerts (the ReportHealth handler).

    Each report replaces the edge's latest one, joins its history (the newest
    ``config.history`` are kept) and is checked against the hospital's thresholds: an alert
    that starts is recorded and logged once (WARNING), one that ends is closed and logged
    once (INFO); an unchanged state logs nothing.

    Args:
        engine: the fleet database (migrated with `migrate_monitoring`).
        config: history length and thresholds.
        report_interval: the ``next_report_interval`` answered to edges, seconds.
        clock: the current time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        config: HealthConfig,
        *,
        report_interval: float,
        clock: Clock = _utcnow,
    ) -> None:
        self._engine = engine
        self._config = config
        self._interval = report_interval
        self._clock = clock
        self._turn = writer_turn(engine)

    async def report(
        self, edge: _Edge, request: edge_pb2.ReportHealthRequest
    ) -> edge_pb2.ReportHealthResponse:
        """Store one report and update the edge's alerts."""
        now = self._clock()
        hospital, edge_id = edge.hospital_id, edge.edge_id
        blob = request.SerializeToString(deterministic=True)
        active = evaluate(request, self._config.thresholds(hospital))
        async with self._turn, self._engine.begin() as conn:
            values = {
                "received_at": now,
                "state": int(request.state),
                "software_version": request.software_version[:64],
                "contract_release": request.contract_release[:64],
                "report": blob,
            }
            updated = await conn.execute(
                HEALTH.update()
                .where(HEALTH.c.hospital_id == hospital, HEALTH.c.edge_id == edge_id)
                .values(**values)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    HEALTH.insert().values(hospital_id=hospital, edge_id=edge_id, **values)
                )
            await conn.execute(
                HEALTH_HISTORY.insert().values(
                    hospital_id=hospital,
                    edge_id=edge_id,
                    received_at=now,
                    state=int(request.state),
                    report=blob,
                )
            )
            await self._trim(conn, hospital, edge_id)
            await self._transitions(conn, hospital, edge_id, active, now)
        response = edge_pb2.ReportHealthResponse(
            next_report_interval=duration_pb2.Duration(seconds=round(self._interval))
        )
        response.server_time.FromDatetime(now)
        return response

    async def _trim(self, conn: AsyncConnection, hospital: str, edge_id: str) -> None:
        keep_from = (
            await conn.execute(
                sa.select(HEALTH_HISTORY.c.seq)
                .where(
                    HEALTH_HISTORY.c.hospital_id == hospital, HEALTH_HISTORY.c.edge_id == edge_id
                )
                .order_by(HEALTH_HISTORY.c.seq.desc())
                .offset(self._config.history - 1)
                .limit(1)
            )
        ).scalar_one_or_none()
        if keep_from is not None:
            await conn.execute(
                HEALTH_HISTORY.delete().where(
                    HEALTH_HISTORY.c.hospital_id == hospital,
                    HEALTH_HISTORY.c.edge_id == edge_id,
                    HEALTH_HISTORY.c.seq < keep_from,
                )
            )

    async def _transitions(
        self,
        conn: AsyncConnection,
        hospital: str,
        edge_id: str,
        active: dict[str, str],
        now: dt.datetime,
    ) -> None:
        open_rows = (
            await conn.execute(
                sa.select(ALERTS.c.seq, ALERTS.c.kind).where(
                    ALERTS.c.hospital_id == hospital,
                    ALERTS.c.edge_id == edge_id,
                    ALERTS.c.cleared_at.is_(None),
                )
            )
        ).all()
        open_kinds = {r.kind: r.seq for r in open_rows}
        for kind, detail in sorted(active.items()):
            if kind in open_kinds:
                continue
            await conn.execute(
                ALERTS.insert().values(
                    hospital_id=hospital,
                    edge_id=edge_id,
                    kind=kind,
                    detail=detail[:500],
                    raised_at=now,
                )
            )
            log.warning(
                "alert %s raised for hospital %s edge %s: %s", kind, hospital, edge_id, detail
            )
        for kind, seq in sorted(open_kinds.items()):
            if kind in active:
                continue
            await conn.execute(ALERTS.update().where(ALERTS.c.seq == seq).values(cleared_at=now))
            log.info("alert %s cleared for hospital %s edge %s", kind, hospital, edge_id)

    async def owners(self, edge_id: str) -> set[str]:
        """The hospitals an edge id has reported for (an edge id is its hospital's)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(HEALTH.c.hospital_id).where(HEALTH.c.edge_id == edge_id)
            )
            return {r.hospital_id for r in rows}

    async def latest(self, hospital_id: str | None = None) -> list[EdgeHealth]:
        """The latest health of every edge (of one hospital), with its open alerts."""
        return await read_health(self._engine, self._config, hospital_id, now=self._clock())

    async def dashboard_fields(self) -> dict[str, dict[str, str]]:
        """Per hospital, the dashboard's edge-health columns (``Overview.add_source``).

        ``edge_health``: ``ALERT`` while any of its edges has an open alert (the row turns
        degraded), else ``OK``; ``edge_alerts``: each open alert's kind and detail.
        """
        fields: dict[str, dict[str, str]] = {}
        for edge in await self.latest():
            row = fields.setdefault(edge.hospital_id, {"edge_health": "OK", "edge_alerts": ""})
            if edge.alerts:
                row["edge_health"] = "ALERT"
                reasons = [f"{a.kind}: {a.detail}" for a in edge.alerts]
                row["edge_alerts"] = "; ".join(filter(None, [row["edge_alerts"], *reasons]))
        return fields

    async def alerts(
        self, hospital_id: str | None = None, *, include_cleared: bool = False
    ) -> list[Alert]:
        """Alerts, newest first."""
        return await read_alerts(self._engine, hospital_id, include_cleared=include_cleared)


def _alert(row: Any) -> Alert:
    raised = _aware(row.raised_at)
    assert raised is not None
    return Alert(
        hospital_id=row.hospital_id,
        edge_id=row.edge_id,
        kind=row.kind,
        detail=row.detail,
        raised_at=raised,
        cleared_at=_aware(row.cleared_at),
    )


async def read_alerts(
    engine: AsyncEngine, hospital_id: str | None = None, *, include_cleared: bool = False
) -> list[Alert]:
    """Alerts (open ones, or all), newest first."""
    query = sa.select(ALERTS).order_by(ALERTS.c.seq.desc())
    if hospital_id is not None:
        query = query.where(ALERTS.c.hospital_id == hospital_id)
    if not include_cleared:
        query = query.where(ALERTS.c.cleared_at.is_(None))
    async with engine.connect() as conn:
        return [_alert(r) for r in (await conn.execute(query)).all()]


async def read_health(
    engine: AsyncEngine,
    config: HealthConfig,
    hospital_id: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> list[EdgeHealth]:
    """The latest health of every edge (of one hospital), with open alerts and staleness."""
    now = now or _utcnow()
    query = sa.select(HEALTH).order_by(HEALTH.c.hospital_id, HEALTH.c.edge_id)
    if hospital_id is not None:
        query = query.where(HEALTH.c.hospital_id == hospital_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    alerts = await read_alerts(engine, hospital_id)
    out: list[EdgeHealth] = []
    for row in rows:
        received = _aware(row.received_at)
        assert received is not None
        limits = config.thresholds(row.hospital_id)
        stale = (now - received).total_seconds() > limits.stale_after
        mine = [a for a in alerts if a.hospital_id == row.hospital_id and a.edge_id == row.edge_id]
        if stale:
            mine.append(
                Alert(
                    hospital_id=row.hospital_id,
                    edge_id=row.edge_id,
                    kind="SILENT",
                    detail=f"no report for {(now - received).total_seconds():.0f}s",
                    raised_at=received,
                    cleared_at=None,
                )
            )
        out.append(
            EdgeHealth(
                hospital_id=row.hospital_id,
                edge_id=row.edge_id,
                received_at=received,
                stale=stale,
                report=edge_pb2.ReportHealthRequest.FromString(row.report),
                alerts=tuple(mine),
            )
        )
    return out
