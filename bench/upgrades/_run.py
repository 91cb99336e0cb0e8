"""The upgrade benchmark's run (see ``__main__``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from cloud.config import UpgradesConfig
from cloud.db import create_engine
from cloud.fleet import CredentialStore, migrate_fleet
from cloud.upgrades import PackageStore, Rollouts, UpgradeHandlers, migrate_upgrades
from mesh.packages import (
    TrustRoot,
    build_package,
    certify_signing_key,
    generate_key,
    sign_package,
)
from mesh.tls import ensure_dev_pki, load_server_credentials
from tools.fleet_sim import FleetUpgrades, UpgradeService

_TREES = ["mesh", "cloud", "frontend_server", "tools", "gen"]
WAVES = "1,10%,50%,100%"


def _commits(count: int) -> list[str]:
    out = subprocess.run(
        ["git", "rev-list", "--first-parent", f"--max-count={count}", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return list(reversed(out))


def _wheel(commit: str) -> bytes:
    return subprocess.run(
        ["git", "archive", "--format=zip", commit, "--", *_TREES], check=True, capture_output=True
    ).stdout


async def run(*, edges: int, distance: int, node_rate: int) -> None:
    commits = _commits(distance + 1)
    if len(commits) < distance + 1:
        sys.exit(f"need {distance + 1} commits of history, have {len(commits)}")
    root, signing = generate_key(), generate_key()
    cert = certify_signing_key(
        root,
        signing.public_key(),
        valid_for=dt.timedelta(days=2),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )
    trust = TrustRoot([root.public_key()])
    with tempfile.TemporaryDirectory(prefix="bench-upgrades-") as tmp_name:
        tmp = Path(tmp_name)
        releases = {"distant": 0, "consecutive": distance - 1, "target": distance}
        files: dict[str, Path] = {}
        for name, i in releases.items():
            unsigned = build_package(
                {"hplus_edge.whl": _wheel(commits[i])},
                version=f"1.{i}.0",
                contract_release="1.2.0",
                profile_schema_version=1,
            )
            files[name] = tmp / f"{name}.pkg"
            files[name].write_bytes(sign_package(unsigned, signing, cert))
        engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'fleet.db'}")
        await migrate_fleet(engine)
        await migrate_upgrades(engine)
        credentials = CredentialStore(engine)
        hospitals = [f"bench-{i:03}" for i in range(edges)]
        tokens = {h: (await credentials.issue(h)).token for h in hospitals}
        store = PackageStore(engine, tmp / "store", trust=trust)
        for name in ("distant", "consecutive", "target"):
            await store.publish(files[name])
        target = await store.full(f"1.{distance}.0")
        config = UpgradesConfig(node_max_bytes_per_second=node_rate, check_interval=0.1)
        rollouts = Rollouts(engine)
        handlers = UpgradeHandlers(store, rollouts, config)
        tls = ensure_dev_pki(tmp / "tls")
        service = UpgradeService(handlers, credentials, load_server_credentials(tls))
        port = await service.start()
        channel = grpc.aio.secure_channel(
            f"localhost:{port}",
            grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes()),
        )
        results: dict[str, dict[str, Any]] = {}
        try:
            for mode in ("delta", "full"):
                groups = {
                    h: ("consecutive" if i % 2 else "distant") for i, h in enumerate(hospitals)
                }
                fleet: dict[str, FleetUpgrades] = {}
                for group in ("consecutive", "distant"):
                    members = [h for h in hospitals if groups[h] == group]
                    fleet[group] = FleetUpgrades(
                        dict.fromkeys(members),
                        channel,
                        tokens,
                        trust=trust,
                        data_dir=tmp / mode / group,
                        version=f"1.{releases[group]}.0",
                        package=files[group] if mode == "delta" else None,
                        interval=0.1,
                    )
                sent_before = handlers.bytes_sent
                info = await rollouts.create(
                    target_version=target.version, waves=WAVES, max_failures=0, hospitals=hospitals
                )
                started = time.monotonic()
                for f in fleet.values():
                    f.start()
                while (await rollouts.get(info.rollout_id)).state == "running":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # the rollout's state is in the database: polled
                took = time.monotonic() - started
                for f in fleet.values():
                    await f.stop()
                state = (await rollouts.get(info.rollout_id)).state
                if state != "completed":
                    sys.exit(f"{mode}: the rollout ended {state}")
                per_group = {
                    g: statistics.mean(f.bytes_received().values()) for g, f in fleet.items()
                }
                results[mode] = {
                    "seconds_to_100pct": round(took, 2),
                    "bytes_per_edge": {g: round(b) for g, b in per_group.items()},
                    "node_bytes_sent": handlers.bytes_sent - sent_before,
                }
        finally:
            await channel.close()
            await service.stop()
            await engine.dispose()
    full_size = target.size
    print(
        f"{edges} edges, waves {WAVES}, node rate {node_rate:,} B/s, full package {full_size:,} B"
    )
    print(
        f"{'mode':<6} {'consecutive B/edge':>19} {'distant B/edge':>15} "
        f"{'node sent B':>13} {'to 100%':>8}"
    )
    for mode, r in results.items():
        b = r["bytes_per_edge"]
        print(
            f"{mode:<6} {b['consecutive']:>19,} {b['distant']:>15,} {r['node_bytes_sent']:>13,} "
            f"{r['seconds_to_100pct']:>7.1f}s"
        )
    d, full = results["delta"], results["full"]
    summary = {
        "consecutive_delta_over_full": d["bytes_per_edge"]["consecutive"]
        / full["bytes_per_edge"]["consecutive"],
        "distant_delta_over_full": d["bytes_per_edge"]["distant"]
        / full["bytes_per_edge"]["distant"],
        "time_delta_over_full": d["seconds_to_100pct"] / full["seconds_to_100pct"],
    }
    print(
        json.dumps(
            {
                "bench": "upgrades",
                "edges": edges,
                "full_bytes": full_size,
                "results": results,
                "summary": {k: round(v, 4) for k, v in summary.items()},
            }
        )
    )
