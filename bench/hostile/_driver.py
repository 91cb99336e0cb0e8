"""Runs every attack against a node process and an edge process, and reports per attack.

For each attack: the target's peak RSS above its baseline, the well-behaved hospital's p50
and p99 latency before and during the attack (the baseline of the ratio, measured in the same
run), how the offender was closed and how long that took. The attacks and the measuring are
`tools.hostile`'s, shared with the hostile-peer tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tools.hostile import ATTACKS, EdgeArena, NodeArena

_KEEPS_TUNNEL = {("node", "partial-messages"), ("node", "huge-metadata"), ("edge", "huge-metadata")}
"""Attacks that end only streams: do not wait long for the tunnel to end."""


async def _run(directory: Path, seconds: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    async with NodeArena(directory / "node") as node:
        for name, attack in ATTACKS.items():
            if "edge" in attack.roles:
                wait = 0.5 if ("node", name) in _KEEPS_TUNNEL else 15.0
                rows.append(
                    (await node.measure(name, seconds=seconds, close_within=wait)).summary()
                )
    async with EdgeArena(directory / "edge") as edge:
        for name, attack in ATTACKS.items():
            if "gateway" in attack.roles and name != "drain-storm":
                wait = 0.5 if ("edge", name) in _KEEPS_TUNNEL else 15.0
                rows.append(
                    (await edge.measure(name, seconds=seconds, close_within=wait)).summary()
                )
        storm = await edge.drain_storm(seconds=6.0)
    return {
        "attacks": rows,
        "drain_storm": {"seconds": 6.0, "connections": storm["notes"]["connections"]},
        "cpus": os.cpu_count(),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def report(results: dict[str, Any]) -> str:
    """The table: one row per attack and target."""
    lines = [
        f"{'attack':<18}{'target':<7}{'closed with':<20}{'close s':>8}{'RSS +MiB':>9}"
        f"{'good p50 ms':>16}{'good p99 ms':>17}{'fails':>6}",
        f"{'':<53}{'before → during':>16}{'before → during':>17}",
    ]
    for row in results["attacks"]:
        close = "-" if row["seconds_to_close"] is None else f"{row['seconds_to_close']:.2f}"
        code = row["code"] or "-"
        if not row["closed"] and row["code"]:
            code = f"{code} (streams)"
        lines.append(
            f"{row['attack']:<18}{row['target']:<7}{code:<20}{close:>8}"
            f"{row['rss_growth_mib']:>9.1f}"
            f"{_ms(row['good_p50_before_ms']):>7} → {_ms(row['good_p50_during_ms']):<6}"
            f"{_ms(row['good_p99_before_ms']):>8} → {_ms(row['good_p99_during_ms']):<6}"
            f"{row['good_failures']:>6}"
        )
    storm = results["drain_storm"]
    lines.append(
        f"drain storm: an edge came back {storm['connections']} times in {storm['seconds']:.0f} s "
        "to a gateway that welcomes and drains at once"
    )
    return "\n".join(lines)


def main_driver(*, seconds: float) -> None:
    """Runs the benchmark; prints the table, then the JSON object on the last line."""
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as directory:
        results = asyncio.run(_run(Path(directory), seconds))
    print(report(results))
    print(json.dumps(results, sort_keys=True))
