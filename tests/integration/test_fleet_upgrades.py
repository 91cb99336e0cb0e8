"""The Proof of issue 14: 50 simulated edges upgraded in waves while calls keep flowing.

A real cloud node holds the 50 edges' tunnels (the fleet simulator: real dialers, TLS,
credentials); the upgrade handlers serve GetUpgradeManifest / DownloadUpgrade /
ReportHealth over TLS; every edge runs the real upgrade agent (download, delta, verify),
and its simulated switch really restarts its tunnel. Meanwhile the cloud calls random
hospitals through the node. First a bad package (it fails its health gate on start): the
canary takes it, rolls back, and the rollout stops with nobody else touched. Then a good
package reaches every hospital in four waves; one edge fails its gate and rolls back,
within the failure budget. The calls that failed during the waves are counted and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from pathlib import Path

import grpc
import pytest

from cloud.config import UpgradesConfig
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from mesh import errors
from tests.integration.hospital_env import FAST, cloud_node
from tests.support.upgrades import upgrade_cloud
from tests.support.waiting import until
from tools.fleet_sim import DirectoryShape, Fleet, FleetConfig, FleetUpgrades, fleet_hospitals

pytestmark = pytest.mark.integration

EDGES = 50


@dataclasses.dataclass
class Calls:
    ok: int = 0
    failed: int = 0
    codes: dict[str, int] = dataclasses.field(default_factory=dict)


async def _load(node: object, hospitals: list[str], calls: Calls, stop: asyncio.Event) -> None:
    """Calls to random hospitals through the node, one after another per worker."""
    rng = random.Random(5)
    router = node.router  # type: ignore[attr-defined]
    while not stop.is_set():
        hospital = rng.choice(hospitals)
        try:
            channel = await router.channel_for(hospital)
            stub = directory_pb2_grpc.DirectoryServiceStub(channel)
            await stub.GetDirectoryDigest(
                directory_pb2.GetDirectoryDigestRequest(bucket_count=4), timeout=5
            )
            calls.ok += 1
        except Exception as err:
            calls.failed += 1
            if isinstance(err, grpc.aio.AioRpcError):
                code = err.code().name
            elif isinstance(err, errors.StatusError):  # the router: no tunnel right now
                code = err.code.name
            else:
                code = type(err).__name__
            calls.codes[code] = calls.codes.get(code, 0) + 1


async def test_fifty_edges_upgrade_in_waves_while_calls_flow(tmp_path: Path) -> None:
    async with cloud_node(tmp_path / "node") as node:
        assert node.tls is not None
        hospitals = fleet_hospitals(EDGES)
        ids = [h.hospital_id for h in hospitals]
        config = UpgradesConfig(
            node_max_bytes_per_second=0, check_interval=0.2, health_gate_timeout=20.0
        )
        async with upgrade_cloud(tmp_path, ids, config=config, url=node.config.fleet_url) as cloud:
            fleet = Fleet(
                FleetConfig(
                    gateways=(f"localhost:{node.port}",),
                    ca_cert=node.tls.ca_cert.read_bytes(),
                    shape=DirectoryShape(doctors=1, days=1, slots=2, capacity=1),
                    change_rate=0.0,
                    backoff_initial=0.05,
                    backoff_max=0.5,
                    tunnel=FAST,
                ),
                hospitals,
                cloud.tokens,
            )
            assert await fleet.start() == EDGES
            base = await cloud.publish("1.4.0")
            upgrades = FleetUpgrades(
                fleet.edges,
                cloud.channel,
                cloud.tokens,
                trust=cloud.keys.trust,
                data_dir=tmp_path / "edges",
                version="1.4.0",
                package=base,
                interval=0.1,
            )
            calls, stop = Calls(), asyncio.Event()
            workers = [asyncio.create_task(_load(node, ids, calls, stop)) for _ in range(4)]
            upgrades.start()
            try:
                # 1. A bad package: the canary takes it, fails its gate, rolls back; stop.
                await cloud.publish("1.5.0", broken=True)
                bad = await cloud.rollouts.create(
                    target_version="1.5.0",
                    waves="1,10%,50%,100%",
                    max_failures=3,
                    hospitals=ids,
                )
                await until(lambda: _state(cloud, bad.rollout_id, "stopped"), limit=60)
                status = await cloud.rollouts.hospitals(bad.rollout_id)
                canary = status[0]
                assert (canary.state, canary.reason) == ("failed", "HEALTH_GATE_FAILED")
                assert all(s.state == "pending" for s in status[1:])
                assert set(upgrades.versions().values()) == {"1.4.0"}
                untouched = {
                    h: b for h, b in upgrades.bytes_received().items() if h != canary.hospital_id
                }
                assert set(untouched.values()) == {0}
                await cloud.rollouts.abort(bad.rollout_id)

                # 2. A good package in four waves; one edge's gate fails (within budget).
                await cloud.publish("1.5.1")
                before = dict(upgrades.bytes_received())
                calls_before = dataclasses.replace(calls, codes=dict(calls.codes))
                good = await cloud.rollouts.create(
                    target_version="1.5.1",
                    waves="1,10%,50%,100%",
                    max_failures=1,
                    hospitals=ids,
                )
                order = await cloud.rollouts.hospitals(good.rollout_id)
                flaky = order[7].hospital_id  # in the 10%-50% wave, not the canary
                upgrades.members[flaky].slots.fails_gate = True
                started = time.monotonic()
                await until(lambda: _state(cloud, good.rollout_id, "completed"), limit=120)
                took = time.monotonic() - started
            finally:
                stop.set()
                await asyncio.gather(*workers)
                await upgrades.stop()
                with contextlib.suppress(Exception):
                    await fleet.shutdown(grace=0.5)

            info = await cloud.rollouts.get(good.rollout_id)
            assert info.counts == {"succeeded": EDGES - 1, "failed": 1}
            versions = upgrades.versions()
            assert versions[flaky] == "1.4.0"
            assert sum(v == "1.5.1" for v in versions.values()) == EDGES - 1
            flaky_status = next(
                h for h in await cloud.rollouts.hospitals(good.rollout_id) if h.hospital_id == flaky
            )
            assert (flaky_status.state, flaky_status.reason) == ("failed", "HEALTH_GATE_FAILED")
            # Every edge that upgraded got a delta from its installed 1.4.0, not the full package.
            full = await cloud.store.full("1.5.1")
            got = {h: b - before[h] for h, b in upgrades.bytes_received().items()}
            assert all(0 < b < full.size / 2 for b in got.values())
            ok = calls.ok - calls_before.ok
            failed = calls.failed - calls_before.failed
            print(
                f"\n50 edges: waves done in {took:.1f}s; calls during the waves: {ok} ok, "
                f"{failed} failed {calls.codes}; restarts: "
                f"{sum(m.slots.restarts for m in upgrades.members.values())}"
            )
            assert ok > 10 * max(failed, 1)
            assert set(calls.codes) <= {"UNAVAILABLE"}


async def _state(cloud: object, rollout_id: str, state: str) -> bool:
    return (await cloud.rollouts.get(rollout_id)).state == state  # type: ignore[attr-defined]
