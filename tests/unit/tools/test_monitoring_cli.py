"""``hplus cloud health`` and ``hplus cloud probes`` on a node's data directory."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from cloud.config import NodeConfig
from cloud.db import create_engine
from cloud.monitoring import HealthMonitor, migrate_monitoring
from cloud.monitoring._schema import PROBE_RESULTS
from hplus.cloud.v1 import edge_pb2
from tools.cli import main


@dataclasses.dataclass(frozen=True)
class Edge:
    hospital_id: str
    edge_id: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def seed(data_dir: Path, *, backlog: int, probes: list[tuple[str, str, str, bool]]) -> None:
    config = NodeConfig(data_dir=data_dir)

    async def go() -> None:
        engine = create_engine(config.fleet_url)
        try:
            await migrate_monitoring(engine)
            monitor = HealthMonitor(engine, config.health, report_interval=30.0)
            report = edge_pb2.ReportHealthRequest(
                edge_id="e1", software_version="1.3.0", state=edge_pb2.EDGE_HEALTH_STATE_HEALTHY
            )
            report.queues.add(queue="list_reports", backlog=backlog)
            report.tunnels.add(gateway_node="n1", connected=True)
            report.his_interfaces.add(
                interface="directory", reachability=edge_pb2.HIS_REACHABILITY_REACHABLE
            ).latency.FromMilliseconds(12)
            await monitor.report(Edge("h1", "e1"), report)
            now = dt.datetime.now(dt.UTC)
            async with engine.begin() as conn:
                for hospital, interface, outcome, available in probes:
                    await conn.execute(
                        PROBE_RESULTS.insert().values(
                            hospital_id=hospital,
                            interface=interface,
                            at=now,
                            outcome=outcome,
                            available=available,
                            latency_ms=3.0,
                            case_id="",
                            fingerprint="",
                            detail="" if available else "UNAVAILABLE: edge offline",
                        )
                    )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_health_shows_state_and_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path))
    code, out = run(capsys, "cloud", "health", *d)
    assert (code, out.strip()) == (0, "no edge has reported its health yet")
    seed(tmp_path, backlog=5, probes=[])
    code, out = run(capsys, "cloud", "health", *d)
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:5] == ["h1", "e1", "HEALTHY", "1.3.0", "1/1"]
    assert "reachable 12ms" in out
    seed(tmp_path, backlog=5000, probes=[])
    code, out = run(capsys, "cloud", "health", "--format", "json", *d)
    assert code == 1
    [edge] = json.loads(out)["edges"]
    assert [a["kind"] for a in edge["alerts"]] == ["BACKLOG"]
    assert edge["report"]["queues"][0]["backlog"] == "5000"
    code, out = run(capsys, "cloud", "health", "--hospital", "other", *d)
    assert code == 0


def test_probes_show_availability(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path))
    code, out = run(capsys, "cloud", "probes", *d)
    assert code == 0
    assert out.startswith("no probe results yet")
    seed(
        tmp_path,
        backlog=0,
        probes=[
            ("h1", "departments", "OK", True),
            ("h1", "reports", "ROTATED", True),
            ("h2", "departments", "OK", True),
            ("h2", "departments", "ERROR", False),
        ],
    )
    code, out = run(capsys, "cloud", "probes", *d)
    assert code == 1
    assert "available now: 66.7% of 3 (hospital, interface) pairs" in out
    code, out = run(capsys, "cloud", "probes", "--format", "json", *d)
    seen = json.loads(out)
    assert seen["available_share"] == pytest.approx(2 / 3)
    h2 = next(p for p in seen["pairs"] if p["hospital_id"] == "h2")
    assert (h2["latest"], h2["share"], h2["probes"]) == ("ERROR", 0.5, 2)
    code, out = run(capsys, "cloud", "probes", "--hospital", "h1", "--format", "json", *d)
    assert (code, json.loads(out)["available_share"]) == (0, 1.0)
