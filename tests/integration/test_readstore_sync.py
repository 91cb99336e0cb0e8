"""The node's sync engine over real tunnels: a simulated HIS, its edge, and the read store.

The edge dials the node over TLS; the node's engine finds the tunnel, syncs the hospital
through it (``RouterSource``), follows a schedule edit through the change feed and repairs
an edit the feed never saw by digest comparison.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cloud.config import NodeConfig, SyncConfig
from cloud.node import CloudNode
from cloud.readstore import HospitalRecord, ReadStore
from cloud.sync import SyncEngine
from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import directory_pb2
from tests.integration.hospital_env import FAST, edge_config, his_url, simulator, write_profile
from tests.support.waiting import until
from tools.his_sim import SimBase

SYNC = SyncConfig(
    slot_interval=1.0,
    directory_interval=2.0,
    drift_interval=3600.0,
    call_timeout=60.0,
    page_size=2000,
)


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[CloudNode, SimBase, str]]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=2.0,
        sync=SYNC,
    )
    async with simulator("rest") as his, CloudNode(config, tunnel_config=FAST) as node:
        assert node.readstore is not None
        assert node.credentials is not None
        profile = load_profile(write_profile(tmp_path, "rest", his_url(his)))
        hospital_id = profile.hospital_id
        await node.readstore.put_hospitals(
            [HospitalRecord(hospital_id=hospital_id, name="滨江市第一人民医院")]
        )
        token = (await node.credentials.issue(hospital_id)).token
        async with EdgeApp(edge_config(node, profile, token, tmp_path / "edge", his)) as app:
            assert app.dialer is not None
            await asyncio.wait_for(app.dialer.connected.wait(), 10)
            yield node, his, hospital_id


async def synced(store: ReadStore, hospital_id: str) -> bool:
    states = await store.status(hospital_id)
    return bool(states) and states[0].last_success is not None


# The edge's change feed re-reads the whole HIS per page today (issue 11, item 4): a full
# pass of the simulated hospital takes ~20 s, each digest ~10 s. The bound is for that.
@pytest.mark.timeout(300)
async def test_the_node_syncs_a_connected_hospital_and_follows_its_changes(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (node, his, hospital_id):
        store = node.readstore
        engine = node.directory_sync
        assert store is not None
        assert isinstance(engine, SyncEngine)
        await until(lambda: synced(store, hospital_id), limit=90)
        status = (await store.status(hospital_id))[0]
        assert status.lease_owner == "n1"
        assert status.offline_since is None
        assert all(k.failures == 0 for k in status.kinds.values())

        found = await store.queries.search_hospitals(query="bjsdy")
        assert [h.hospital_id for h in found.hospitals] == [hospital_id]
        assert found.hospitals[0].online_booking_available

        schedule = next(
            s
            for s in his.core.schedules.values()
            if s.doctor_id and s.date >= dt.date.today() and not s.suspended
        )
        count = await store.count(hospital_id, directory_pb2.ENTITY_KIND_SCHEDULE)
        assert count >= 1

        async def slots_of(schedule_id: str) -> list[patient_pb2.Slot]:
            page = await store.queries.list_slots(
                hospital_id, start_date=schedule.date, doctor_id=schedule.doctor_id, limit=500
            )
            return [s for s in page.slots if s.slot_id in slot_ids]

        slot_ids = {
            s.slot_id for s in his.core.slots.values() if s.schedule_id == schedule.schedule_id
        }
        assert await slots_of(schedule.schedule_id)

        # A clerk suspends the session: the next incremental pass carries it.
        his.core.suspend_schedule(schedule.schedule_id, "医生临时停诊")

        async def suspended() -> bool:
            return all(
                s.availability == patient_pb2.SLOT_AVAILABILITY_SUSPENDED
                for s in await slots_of(schedule.schedule_id)
            )

        await until(suspended, limit=60)
        slot_kind = (await store.status(hospital_id))[0].kinds[directory_pb2.ENTITY_KIND_SLOT]
        assert slot_kind.watermark

        # An edit the feed never reports (no version, no change record): only the digest
        # comparison finds it, and only the differing bucket is re-read.
        other = next(
            s
            for s in his.core.schedules.values()
            if s.date >= dt.date.today() and s.schedule_id != schedule.schedule_id
        )
        other.location = "新门诊楼 9 楼"
        drift = await engine.check_drift(hospital_id)
        assert drift is not None
        # The schedule's bucket; the suspension also changed its slots' status at the HIS
        # without change records of their own: that is drift too, and repaired the same way.
        assert len(drift.differing[directory_pb2.ENTITY_KIND_SCHEDULE]) == 1
        assert set(drift.differing) <= {
            directory_pb2.ENTITY_KIND_SCHEDULE,
            directory_pb2.ENTITY_KIND_SLOT,
        }
        again = await engine.check_drift(hospital_id)
        assert again is not None
        assert again.differing == {}


async def test_a_hospital_without_a_tunnel_is_listed_stale_and_offline(tmp_path: Path) -> None:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        sync=SYNC,
    )
    async with CloudNode(config, tunnel_config=FAST) as node:
        store = node.readstore
        assert store is not None
        await store.put_hospitals([HospitalRecord(hospital_id="gone", name="远方医院")])

        async def marked() -> bool:
            states = await store.status("gone")
            return bool(states) and states[0].offline_since is not None

        await until(marked, limit=10)
        state = (await store.status("gone"))[0]
        assert state.stale(dt.datetime.now(dt.UTC), SYNC.stale_after)
        listed = await store.queries.search_hospitals(query="远方")
        assert [h.hospital_id for h in listed.hospitals] == ["gone"]
        assert not listed.hospitals[0].online_booking_available
