"""The directory refresher against the simulated HIS of each dialect, into a real mirror."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from frontend_server.adapters import HisProtocolError, HisUnavailable, make_adapter
from frontend_server.directory import ENTITY_KINDS, DirectoryMirror, FeedQuery
from frontend_server.services import DirectoryConfig, DirectoryRefresher
from hplus.hospital.v1 import directory_pb2
from tests.unit.frontend_server.adapters.helpers import mirror as his_mirror
from tests.unit.frontend_server.adapters.helpers import settings_for
from tools.his_sim import DbHis, Latency, Outage, RestHis, SimBase, SoapHis

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")
SEED = 5


def simulator(dialect: str) -> SimBase:
    if dialect == "rest":
        return RestHis(seed=SEED)
    if dialect == "soap":
        return SoapHis(seed=SEED)
    return DbHis(seed=SEED, poll_interval=0.005)


@asynccontextmanager
async def refresher_on(
    his: SimBase, tmp_path: Path, config: DirectoryConfig | None = None, **overrides: object
) -> AsyncIterator[DirectoryRefresher]:
    async with (
        make_adapter(settings_for(his, **overrides)) as adapter,
        DirectoryMirror(tmp_path / "directory.db") as mirror,
    ):
        refresher = DirectoryRefresher(mirror, adapter, zone=ZONE, config=config)
        try:
            yield refresher
        finally:
            await refresher.shutdown()


def published(his: SimBase) -> set[tuple[int, str]]:
    """What the HIS publishes from today on, as (kind, id)."""
    core = his.core
    schedules = core.list_schedules(start=core.today)
    out = {(directory_pb2.ENTITY_KIND_DEPARTMENT, d) for d in core.departments}
    out |= {(directory_pb2.ENTITY_KIND_DOCTOR, d) for d in core.doctors}
    out |= {(directory_pb2.ENTITY_KIND_SCHEDULE, s.schedule_id) for s in schedules}
    out |= {(directory_pb2.ENTITY_KIND_SLOT, s.slot_id) for s in core.slots_between(core.today)}
    return out


def refused(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.message for r in caplog.records if "refused the bulk slot read" in r.message]


def operations(his: SimBase) -> list[str]:
    return [r.operation for r in his.request_log]


@pytest.mark.parametrize("dialect", ["rest", "soap", "db"])
async def test_the_first_read_fills_the_mirror_with_a_few_bulk_reads(
    dialect: str, tmp_path: Path
) -> None:
    async with simulator(dialect) as his, refresher_on(his, tmp_path) as refresher:
        await refresher.refresh()
        assert refresher.mirror.entity_ids() == published(his)
        assert refresher.mirror.data_time is not None
        assert "list_slots" not in operations(his)  # never one read per schedule
        if dialect == "soap":
            assert sorted(operations(his)) == [
                "list_departments",
                "list_doctors",
                "list_schedules",
                "list_slots_between",
            ]
        if dialect == "rest":
            assert operations(his) == ["get_changes"]  # the HIS's own dump, with a watermark
            assert refresher.mirror.his_watermark


async def test_without_a_bulk_read_slots_are_read_per_schedule_and_bulk_retried_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)]
    async with (
        RestHis(seed=SEED) as his,
        make_adapter(
            settings_for(
                his,
                rest_paths={"list_slots_between": "/no-such-path"},  # an older HIS release
                disabled_capabilities=frozenset({"incremental_changes"}),
            )
        ) as adapter,
        DirectoryMirror(tmp_path / "directory.db") as mirror,
    ):
        refresher = DirectoryRefresher(mirror, adapter, zone=ZONE, clock=lambda: now[0])
        await refresher.refresh()
        assert mirror.entity_ids() == published(his)
        schedules = len(his.core.list_schedules(start=his.core.today))
        assert operations(his).count("list_slots") == schedules
        his.request_log.clear()
        await refresher.refresh()
        assert "list_slots_between" not in operations(his)
        assert len(refused(caplog)) == 1
        now[0] += dt.timedelta(hours=2)
        await refresher.refresh()
        assert len(refused(caplog)) == 2  # tried the bulk read again (still refused)


async def test_incremental_reads_between_full_ones_and_deletions_found_by_full_reads(
    tmp_path: Path,
) -> None:
    now = [dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)]
    config = DirectoryConfig(full_refresh_seconds=600)
    async with (
        RestHis(seed=SEED) as his,
        make_adapter(settings_for(his)) as adapter,
        DirectoryMirror(tmp_path / "directory.db") as mirror,
    ):
        refresher = DirectoryRefresher(
            mirror, adapter, zone=ZONE, config=config, clock=lambda: now[0]
        )
        await refresher.refresh()
        head = mirror.head
        target = his.core.list_schedules(start=his.core.today)[3].schedule_id
        his.core.suspend_schedule(target, "医生临时停诊")
        his.request_log.clear()
        now[0] += dt.timedelta(seconds=30)
        await refresher.refresh()
        assert operations(his) == ["get_changes"]
        changes = [
            e async for e in mirror.changes(
                since=head, at=mirror.head, after=None, query=_everything()
            )
        ]  # fmt: skip
        assert {(c.kind, c.entity_id) for c in changes} == {
            (directory_pb2.ENTITY_KIND_SCHEDULE, target)
        }
        now[0] += dt.timedelta(seconds=600)
        his.request_log.clear()
        await refresher.refresh()
        assert "list_slots_between" in operations(his)  # the full read came due


@pytest.mark.parametrize("dialect", ["soap", "db"])
async def test_a_withdrawn_schedule_is_deleted_from_the_mirror(
    dialect: str, tmp_path: Path
) -> None:
    async with simulator(dialect) as his, refresher_on(his, tmp_path) as refresher:
        await refresher.refresh()
        target = his.core.list_schedules(start=his.core.today)[5].schedule_id
        his.core.delete_schedule(target)
        await his_mirror(his)
        await refresher.refresh()
        assert refresher.mirror.entity_ids() == published(his)
        assert (directory_pb2.ENTITY_KIND_SCHEDULE, target) not in refresher.mirror.entity_ids()


async def test_a_pass_waits_a_bounded_time_for_a_stale_mirror(tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC)]
    config = DirectoryConfig(max_staleness_seconds=10.0, wait_seconds=0.05)
    async with (
        SoapHis(seed=SEED) as his,
        make_adapter(settings_for(his)) as adapter,
        DirectoryMirror(tmp_path / "directory.db") as mirror,
    ):
        refresher = DirectoryRefresher(
            mirror, adapter, zone=ZONE, config=config, clock=lambda: now[0]
        )
        try:
            await his.inject(Outage(mode="503"))
            with pytest.raises(HisUnavailable, match="has not read the HIS yet"):
                await refresher.ensure_fresh()  # nothing to serve: say so, never empty
            await his.clear_faults()
            await refresher.refresh()
            read = mirror.data_time
            assert read is not None
            his.request_log.clear()
            await refresher.ensure_fresh()  # fresh enough: the HIS is not asked
            assert not his.request_log
            # Stale, and the HIS slower than the wait: the pass goes on with the mirror
            # as it is, while the refresh it asked for is under way.
            now[0] += dt.timedelta(hours=1)
            await his.inject(Latency(seconds=30.0, operations=frozenset()))
            await refresher.ensure_fresh()
            assert mirror.data_time == read
            assert his.request_log  # the refresh did start
        finally:
            await refresher.shutdown()


async def test_slow_reads_space_the_next_ones_out(tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC)]
    config = DirectoryConfig(max_staleness_seconds=0.0)
    async with (
        SoapHis(seed=SEED) as his,
        make_adapter(settings_for(his, disabled_capabilities=frozenset({"bulk_slots"}))) as a,
        DirectoryMirror(tmp_path / "directory.db") as mirror,
    ):
        refresher = DirectoryRefresher(mirror, a, zone=ZONE, config=config, clock=lambda: now[0])
        await refresher.refresh()  # one read per schedule: slow
        took = dt.timedelta(seconds=refresher.last_seconds)
        assert took.total_seconds() > 0
        his.request_log.clear()
        now[0] += 5 * took
        await refresher.ensure_fresh()  # stale, but within ten times the last read
        assert not his.request_log
        now[0] += 6 * took
        await refresher.ensure_fresh()  # beyond: the refresh starts
        assert his.request_log
        await refresher.shutdown()


def _everything() -> FeedQuery:
    return FeedQuery(frozenset(ENTITY_KINDS), None, dt.date(2000, 1, 1))


async def test_a_full_read_that_lists_nothing_of_a_kind_is_refused(tmp_path: Path) -> None:
    async with SoapHis(seed=SEED) as his, refresher_on(his, tmp_path) as refresher:
        await refresher.refresh()
        before = refresher.mirror.entity_ids()
        for schedule in his.core.list_schedules():
            his.core.delete_schedule(schedule.schedule_id)  # the HIS answers no sessions
        with pytest.raises(HisProtocolError, match="listed no ENTITY_KIND_SCHEDULE"):
            await refresher.refresh()
        assert refresher.mirror.entity_ids() == before
        assert "listed no" in refresher.last_error


async def test_shutdown_as_a_refresh_finishes_stops_the_loop_at_once(tmp_path: Path) -> None:
    """A shutdown that lands between the end of a read and the loop resuming stopped the
    loop only after the next interval (the edge then took 30 s to stop on SIGTERM)."""
    async with (
        RestHis(seed=SEED) as his,
        refresher_on(his, tmp_path, DirectoryConfig(refresh_seconds=3600)) as refresher,
    ):
        start = refresher._start
        stopping: list[asyncio.Task[None]] = []

        def start_then_stop_as_it_ends() -> asyncio.Task[None]:
            task = start()
            if not stopping:
                # Added before the loop awaits the read, so shutdown's first step runs
                # after the read ended and before the loop resumes.
                task.add_done_callback(
                    lambda _: stopping.append(asyncio.ensure_future(refresher.shutdown()))
                )
            return task

        refresher._start = start_then_stop_as_it_ends  # type: ignore[method-assign]
        await asyncio.wait_for(refresher.run(), timeout=5.0)
        await asyncio.gather(*stopping)
