"""``hplus cloud health`` and ``hplus cloud probes``: what the node knows of the edges."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, CliError, Parser
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cloud.config import NodeConfig

__all__ = ["register"]

T = TypeVar("T")

_STATES = {0: "UNKNOWN", 1: "HEALTHY", 2: "DEGRADED", 3: "UNHEALTHY"}
_REACH = {0: "unchecked", 1: "reachable", 2: "slow", 3: "erroring", 4: "UNREACHABLE"}


def register(csub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``health`` and ``probes`` to the ``cloud`` command group."""
    health = csub.add_parser(
        "health",
        help="edges' latest health reports and open alerts (backlog, task age, HIS, disk)",
        description="Read the latest ReportHealth of every edge from the fleet database "
        "(shared by all nodes): state, versions, tunnels, queue backlog and oldest task, HIS "
        "reachability and latency, disk; and the open alerts under the thresholds in force "
        "([health] and [health.hospitals.<ID>]). Exit 1 while any alert is open.",
    )
    health.add_argument("--hospital", help="only this hospital")
    health.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(health)
    health.set_defaults(func=_health)

    probes = csub.add_parser(
        "probes",
        help="business probes: availability per hospital and interface, and overall",
        description="Read the business probes' results from the fleet database: per "
        "hospital and interface (departments, reports, bills) the latest outcome and the "
        "share of available answers over [probes] window, and the share of pairs available "
        "now. Exit 1 when a pair is unavailable now.",
    )
    probes.add_argument("--hospital", help="only this hospital")
    probes.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(probes)
    probes.set_defaults(func=_probes)


def _with_fleet(config: NodeConfig, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from cloud.db import DatabaseError, create_engine
    from cloud.monitoring import migrate_monitoring

    async def go() -> T:
        engine = create_engine(config.fleet_url)
        try:
            await migrate_monitoring(engine)
            return await action(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except DatabaseError as err:
        raise CliError(str(err)) from None


def _seconds(duration: Any) -> float:
    return float(duration.ToNanoseconds()) / 1e9


def _health(args: argparse.Namespace) -> int:
    from cloud.monitoring import EdgeHealth, read_health

    config = _load(args)

    async def read(engine: AsyncEngine) -> list[EdgeHealth]:
        return await read_health(engine, config.health, args.hospital)

    edges = _with_fleet(config, read)
    alerting = any(e.alerts for e in edges)
    if args.format == "json":
        print(json.dumps({"edges": [e.as_dict() for e in edges]}, ensure_ascii=False, indent=2))
        return EXIT_FAILED if alerting else 0
    if not edges:
        print("no edge has reported its health yet")
        return 0
    now = dt.datetime.now(dt.UTC)
    print(
        f"{'HOSPITAL':<16} {'EDGE':<20} {'STATE':<10} {'VERSION':<10} {'TUNNELS':<8} "
        f"{'BACKLOG':>8} {'OLDEST':>8} {'HIS':<22} {'DISK FREE':>10} {'SEEN':>6}"
    )
    for e in edges:
        r = e.report
        up = sum(t.connected for t in r.tunnels)
        backlog = sum(q.backlog for q in r.queues)
        oldest = max((_seconds(q.oldest_age) for q in r.queues), default=0.0)
        his = (
            ", ".join(
                _REACH.get(i.reachability, "?")
                + (f" {_seconds(i.latency) * 1000:.0f}ms" if i.HasField("latency") else "")
                for i in r.his_interfaces
            )
            or "-"
        )
        disk = (
            f"{r.resources.disk_free_bytes / (1 << 30):.1f}G"
            if r.resources.disk_total_bytes
            else "-"
        )
        seen = f"{(now - e.received_at).total_seconds():.0f}s"
        state = "SILENT" if e.stale else _STATES.get(r.state, "?")
        print(
            f"{e.hospital_id:<16} {e.edge_id:<20} {state:<10} {r.software_version or '-':<10} "
            f"{f'{up}/{len(r.tunnels)}':<8} {backlog:>8} {oldest:>7.0f}s {his:<22} "
            f"{disk:>10} {seen:>6}"
        )
        for alert in e.alerts:
            print(
                f"  ALERT {alert.kind}: {alert.detail} (since {alert.raised_at:%Y-%m-%d %H:%M:%S})"
            )
    return EXIT_FAILED if alerting else 0


def _probes(args: argparse.Namespace) -> int:
    from cloud.monitoring import INTERFACES, Availability, read_availability

    config = _load(args)

    async def read(engine: AsyncEngine) -> Availability:
        return await read_availability(
            engine, window=config.probes.window, hospital_id=args.hospital
        )

    seen = _with_fleet(config, read)
    down = any(not v["latest_available"] for v in seen.pairs.values())
    if args.format == "json":
        print(json.dumps(seen.as_dict(), ensure_ascii=False, indent=2))
        return EXIT_FAILED if down else 0
    if not seen.pairs:
        print(
            "no probe results yet (probes run every "
            f"{config.probes.interval:.0f}s; enabled={config.probes.enabled})"
        )
        return 0
    print(
        f"{'HOSPITAL':<16} {'INTERFACE':<12} {'LATEST':<9} {'AVAILABLE':>10} {'PROBES':>7}  DETAIL"
    )
    order = {name: i for i, name in enumerate(INTERFACES)}
    for (hospital, interface), v in sorted(
        seen.pairs.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        print(
            f"{hospital:<16} {interface:<12} {v['latest']:<9} {v['share'] * 100:>9.1f}% "
            f"{v['probes']:>7}  {v['detail']}"
        )
    assert seen.share is not None
    pairs = len(seen.pairs)
    print(f"available now: {seen.share * 100:.1f}% of {pairs} (hospital, interface) pairs")
    return EXIT_FAILED if down else 0
