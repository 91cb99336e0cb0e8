"""Edge health in the database: latest + bounded history, alerts raised and cleared once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.edgeconfig import HealthConfig, Thresholds
from cloud.monitoring import HealthMonitor, evaluate, migrate_monitoring, read_alerts, read_health
from cloud.monitoring._schema import ALERTS, HEALTH_HISTORY
from hplus.cloud.v1 import edge_pb2


@dataclasses.dataclass(frozen=True)
class Edge:
    hospital_id: str
    edge_id: str


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def report(
    *,
    backlog: int = 0,
    age: float = 0.0,
    his: int = edge_pb2.HIS_REACHABILITY_REACHABLE,
    free: int = 10 << 30,
) -> edge_pb2.ReportHealthRequest:
    out = edge_pb2.ReportHealthRequest(edge_id="e1", software_version="1.3.0")
    queue = out.queues.add(queue="list_reports", backlog=backlog)
    queue.oldest_age.FromNanoseconds(round(age * 1e9))
    out.his_interfaces.add(interface="directory", adapter="rest", reachability=his)  # type: ignore[arg-type]
    out.resources.disk_free_bytes = free
    out.resources.disk_total_bytes = 100 << 30
    return out


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate_monitoring(db_engine)
    return db_engine


def test_evaluate_names_every_broken_threshold() -> None:
    limits = Thresholds(max_backlog=10, max_oldest_age=60.0, min_disk_free_bytes=1 << 30)
    assert evaluate(report(), limits) == {}
    found = evaluate(
        report(backlog=11, age=61.0, his=edge_pb2.HIS_REACHABILITY_UNREACHABLE, free=1 << 20),
        limits,
    )
    assert sorted(found) == ["BACKLOG", "DISK_LOW", "HIS_UNREACHABLE", "TASK_AGE"]
    assert "11 waiting (limit 10)" in found["BACKLOG"]
    assert "1 MiB free" in found["DISK_LOW"]
    assert evaluate(report(backlog=10, age=60.0), limits) == {}
    quiet = dataclasses.replace(limits, his_unreachable=False)
    assert evaluate(report(his=edge_pb2.HIS_REACHABILITY_UNREACHABLE), quiet) == {}


async def test_alerts_transition_once_each_way(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    monitor = HealthMonitor(
        engine,
        HealthConfig(defaults=Thresholds(max_backlog=100)),
        report_interval=30.0,
        clock=clock,
    )
    edge = Edge("h1", "e1")
    caplog.set_level(logging.INFO, logger="cloud.monitoring")
    reply = await monitor.report(edge, report(backlog=5))
    assert reply.next_report_interval.seconds == 30
    assert reply.server_time.ToDatetime(tzinfo=dt.UTC) == clock.now
    assert await monitor.alerts() == []

    for _ in range(3):
        clock.now += dt.timedelta(seconds=30)
        await monitor.report(edge, report(backlog=500))
    raised = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(raised) == 1
    assert raised[0].levelno == logging.WARNING
    assert "BACKLOG" in raised[0].getMessage()
    assert "h1" in raised[0].getMessage()
    [alert] = await monitor.alerts("h1")
    assert (alert.kind, alert.edge_id, alert.cleared_at) == ("BACKLOG", "e1", None)
    assert alert.raised_at == clock.now - dt.timedelta(seconds=60)

    clock.now += dt.timedelta(seconds=30)
    await monitor.report(edge, report(backlog=5))
    clock.now += dt.timedelta(seconds=30)
    await monitor.report(edge, report(backlog=5))
    cleared = [r for r in caplog.records if "cleared" in r.getMessage()]
    assert len(cleared) == 1
    assert await monitor.alerts("h1") == []
    history = await read_alerts(engine, "h1", include_cleared=True)
    assert [(a.kind, a.cleared_at is not None) for a in history] == [("BACKLOG", True)]


async def test_thresholds_can_differ_per_hospital(engine: AsyncEngine) -> None:
    config = HealthConfig(
        defaults=Thresholds(max_backlog=100),
        hospitals={"big": Thresholds(max_backlog=10_000)},
    )
    monitor = HealthMonitor(engine, config, report_interval=30.0, clock=Clock())
    await monitor.report(Edge("small", "e1"), report(backlog=500))
    await monitor.report(Edge("big", "e2"), report(backlog=500))
    assert [(a.hospital_id, a.kind) for a in await monitor.alerts()] == [("small", "BACKLOG")]


async def test_latest_and_a_bounded_history_per_edge(engine: AsyncEngine) -> None:
    clock = Clock()
    monitor = HealthMonitor(engine, HealthConfig(history=3), report_interval=30.0, clock=clock)
    for backlog in range(5):
        clock.now += dt.timedelta(seconds=30)
        await monitor.report(Edge("h1", "e1"), report(backlog=backlog))
    await monitor.report(Edge("h1", "e2"), report(backlog=9))
    async with engine.connect() as conn:
        kept = (
            await conn.execute(
                sa.select(HEALTH_HISTORY.c.report)
                .where(HEALTH_HISTORY.c.edge_id == "e1")
                .order_by(HEALTH_HISTORY.c.seq)
            )
        ).all()
    assert [edge_pb2.ReportHealthRequest.FromString(r.report).queues[0].backlog for r in kept] == [
        2,
        3,
        4,
    ]
    latest = await monitor.latest("h1")
    assert [(e.edge_id, e.report.queues[0].backlog, e.stale) for e in latest] == [
        ("e1", 4, False),
        ("e2", 9, False),
    ]
    assert await monitor.owners("e1") == {"h1"}
    # Silence shows as a SILENT alert once stale_after passed.
    later = clock.now + dt.timedelta(seconds=Thresholds().stale_after + 1)
    stale = await read_health(engine, HealthConfig(), "h1", now=later)
    assert all(e.stale and [a.kind for a in e.alerts] == ["SILENT"] for e in stale)
    assert stale[0].as_dict()["alerts"][0]["kind"] == "SILENT"
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ALERTS))).scalar() == 0


async def test_the_dashboard_sees_each_hospitals_open_alerts(engine: AsyncEngine) -> None:
    monitor = HealthMonitor(engine, HealthConfig(), report_interval=30.0, clock=Clock())
    assert await monitor.dashboard_fields() == {}
    await monitor.report(Edge("h1", "e1"), report())
    await monitor.report(Edge("h2", "e2"), report(his=edge_pb2.HIS_REACHABILITY_UNREACHABLE))
    fields = await monitor.dashboard_fields()
    assert fields["h1"] == {"edge_health": "OK", "edge_alerts": ""}
    assert fields["h2"]["edge_health"] == "ALERT"
    assert fields["h2"]["edge_alerts"].startswith("HIS_UNREACHABLE: directory (rest)")
    # The HIS answers again: the alert clears, and so does the column.
    await monitor.report(Edge("h2", "e2"), report())
    assert (await monitor.dashboard_fields())["h2"] == {"edge_health": "OK", "edge_alerts": ""}
