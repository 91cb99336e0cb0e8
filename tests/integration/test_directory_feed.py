"""The change feed through the tunnel, as the cloud reads it, on every dialect.

Each test runs a simulated HIS, a cloud node and the example hospital's edge; the cloud
side keeps what it received in a dict the way the contract says it applies pages (version
guard; deletion of what a snapshot did not contain).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest

from frontend_server.directory import FeedLimits
from frontend_server.services import DirectoryConfig
from hplus.hospital.v1 import directory_pb2
from tests.integration.hospital_env import Env, error_reason, hospital
from tests.support.feed import CloudModel, Fetch
from tests.unit.frontend_server.adapters.helpers import mirror as his_mirror
from tools.his_sim import Outage, SimBase

DIALECTS = ("rest", "soap", "db")
T = 15.0
PAGE_BYTES = 32 * 1024
# No background refresh during a test: the tests decide when the mirror reads the HIS.
QUIET = DirectoryConfig(
    refresh_seconds=3600,
    max_staleness_seconds=3600,
    limits=FeedLimits(max_page_bytes=PAGE_BYTES),
)


def feed(env: Env) -> Fetch:
    """The hospital's feed through the tunnel, as the cloud calls it."""

    async def fetch(request: directory_pb2.GetChangesRequest) -> directory_pb2.GetChangesResponse:
        return await env.directory.GetChanges(request, timeout=T)

    return fetch


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_pass_is_one_point_in_time_while_the_his_changes(
    dialect: str, tmp_path: Path
) -> None:
    async with hospital(dialect, tmp_path, directory=QUIET) as env:
        reference = CloudModel()
        await reference.sync(feed(env))
        assert len(reference.pages) > 1  # the byte bound cut the 7-day directory
        for page in reference.pages:
            changes = directory_pb2.GetChangesResponse(changes=page.changes)
            assert 0 < changes.ByteSize() <= PAGE_BYTES
        core = env.his.core
        schedules = core.list_schedules(start=core.today)
        suspended = [schedules[1].schedule_id, schedules[7].schedule_id]
        withdrawn = schedules[12].schedule_id
        withdrawn_slots = {s.slot_id for s in core.slots_of(withdrawn)}
        doctor = sorted(core.doctors)[0]

        async def the_his_changes(page_number: int) -> None:
            if page_number != 1:
                return
            for schedule_id in suspended:
                core.suspend_schedule(schedule_id, "医生临时停诊")
            core.delete_schedule(withdrawn)
            core.rename_doctor(doctor, "新的擅长")
            await his_mirror(env.his)
            await env.app.refresher.refresh()

        cloud = CloudModel()
        last = await cloud.sync(feed(env), page_size=200, between_pages=the_his_changes)
        assert all(p.snapshot for p in cloud.pages)
        delivered = cloud.delivered()
        assert len(delivered) == len(set(delivered))
        # The pass is the directory as it was when the pass began, nothing of the changes.
        assert cloud.state() == reference.state()
        assert last.watermark == reference.watermark

        incremental = await cloud.sync(feed(env))
        assert not incremental.snapshot
        changed = {(c.kind, c.entity_id): c for c in incremental.changes}
        for schedule_id in suspended:
            got = changed[(directory_pb2.ENTITY_KIND_SCHEDULE, schedule_id)]
            assert got.schedule.status == directory_pb2.SCHEDULE_STATUS_SUSPENDED
        assert changed[(directory_pb2.ENTITY_KIND_SCHEDULE, withdrawn)].deleted
        assert all(changed[(directory_pb2.ENTITY_KIND_SLOT, s)].deleted for s in withdrawn_slots)
        assert changed[(directory_pb2.ENTITY_KIND_DOCTOR, doctor)].doctor.specialty == "新的擅长"
        # The cloud now holds exactly what a fresh snapshot says.
        fresh = CloudModel()
        await fresh.sync(feed(env))
        assert cloud.state() == fresh.state()
        assert (directory_pb2.ENTITY_KIND_SCHEDULE, withdrawn) not in cloud.state()


async def test_watermarks_of_another_store_get_a_snapshot(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path, directory=QUIET) as env:
        cloud = CloudModel()
        await cloud.sync(feed(env))
        entities = len(cloud.held)
        for since in ("m1.0123456789abcdef.1", "full:2026-01-01", cloud.watermark + "0"):
            page = await env.directory.GetChanges(
                directory_pb2.GetChangesRequest(since=since, page_size=5000), timeout=T
            )
            assert page.snapshot, since
        quiet = await cloud.sync(feed(env))
        assert (quiet.snapshot, len(quiet.changes), len(cloud.held)) == (False, 0, entities)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.directory.GetChanges(
                directory_pb2.GetChangesRequest(page_token=cloud.pages[0].next_page_token or "x"),
                timeout=T,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_damaged_mirror_file_is_rebuilt_when_the_edge_starts(tmp_path: Path) -> None:
    data = tmp_path / "edge"
    data.mkdir()
    (data / "directory.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    async with hospital("soap", tmp_path, directory=QUIET) as env:
        cloud = CloudModel()
        page = await cloud.sync(feed(env))
        assert page.snapshot
        assert len(cloud.held) == env.app.mirror.size > 0
        assert (data / "directory.db.damaged").exists()
        assert stat.S_IMODE(os.stat(data / "directory.db").st_mode) == 0o600


async def test_the_feed_is_unavailable_until_the_his_was_read(tmp_path: Path) -> None:
    async def down(his: SimBase) -> None:
        await his.inject(Outage(mode="503"))

    config = DirectoryConfig(refresh_seconds=3600, wait_seconds=10.0)
    async with hospital("soap", tmp_path, directory=config, before_edge=down) as env:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.directory.GetChanges(directory_pb2.GetChangesRequest(), timeout=T)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(info.value) == "HIS_UNAVAILABLE"
        await env.his.clear_faults()
        page = await env.directory.GetChanges(
            directory_pb2.GetChangesRequest(page_size=5000), timeout=T
        )
        assert page.snapshot
        assert page.changes
        assert page.HasField("data_time")
