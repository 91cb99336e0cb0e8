"""The directory mirror and the change feed served from it, on a real SQLite file.

The feed is driven through ``get_changes`` like the servicer drives it; the cloud side is
a dict that applies pages the way the contract tells the cloud to (version guard, deletion
after a snapshot), so "the cloud converges on the mirror" is checked, not assumed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from frontend_server.directory import (
    DirectoryMirror,
    FeedLimits,
    FeedRequestError,
    MirrorEntity,
    MirrorError,
    MirrorUpdate,
    directory_digest,
    get_changes,
)
from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_digests, bucket_of, content_digest
from tests.support.feed import CloudModel, Fetch

TODAY = dt.date(2026, 3, 2)
DEPT, DOCTOR, SCHEDULE, SLOT = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)
ALL = frozenset({DEPT, DOCTOR, SCHEDULE, SLOT})


class Clock:
    """Epoch seconds that move only when told (versions are microseconds of it)."""

    def __init__(self) -> None:
        self.now = 1_772_409_600.0  # 2026-03-02 00:00 UTC

    def __call__(self) -> float:
        return self.now


def read_time(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now, dt.UTC)


def directory(
    *, days: int = 3, doctors: int = 4, slots: int = 5, remaining: int = 3, day0: dt.date = TODAY
) -> list[MirrorEntity]:
    """A small hospital: 2 departments, doctors, AM sessions per doctor and day, slots."""
    out = [
        MirrorEntity(DEPT, f"D{i}", None, directory_pb2.Department(department_id=f"D{i}",
                                                                   name=f"科室{i}"))
        for i in range(2)
    ]  # fmt: skip
    for d in range(doctors):
        out.append(
            MirrorEntity(
                DOCTOR,
                f"DR{d:02d}",
                None,
                directory_pb2.Doctor(doctor_id=f"DR{d:02d}", name="医生"),
            )
        )
        for day in range(days):
            date = day0 + dt.timedelta(days=day)
            sid = f"S{date:%m%d}-{d:02d}"
            schedule = directory_pb2.Schedule(schedule_id=sid, doctor_id=f"DR{d:02d}")
            schedule.date.year, schedule.date.month, schedule.date.day = (
                date.year,
                date.month,
                date.day,
            )
            out.append(MirrorEntity(SCHEDULE, sid, date, schedule))
            for n in range(slots):
                slot = directory_pb2.Slot(
                    slot_id=f"{sid}-{n}", schedule_id=sid, capacity=3, remaining=remaining
                )
                out.append(MirrorEntity(SLOT, f"{sid}-{n}", date, slot))
    return out


def update(
    entities: Iterable[MirrorEntity],
    clock: Clock,
    *,
    complete: frozenset[int] = ALL,
    deleted: Iterable[tuple[int, str]] = (),
    scope: dt.date = TODAY,
) -> MirrorUpdate:
    clock.now += 1.0
    return MirrorUpdate(
        entities=list(entities),
        deleted=list(deleted),
        complete=complete,
        scope_start=scope,
        read_time=read_time(clock),
    )


def with_remaining(entity: MirrorEntity, remaining: int) -> MirrorEntity:
    slot = directory_pb2.Slot()
    slot.CopyFrom(entity.message)
    slot.remaining = remaining
    return MirrorEntity(entity.kind, entity.entity_id, entity.day, slot)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def mirror(tmp_path: Path, clock: Clock):  # type: ignore[no-untyped-def]
    async with DirectoryMirror(tmp_path / "directory.db", clock=clock) as m:
        yield m


def feed(source: DirectoryMirror, **kw: object) -> Fetch:
    """The feed of ``source`` as the cloud calls it."""

    async def fetch(request: directory_pb2.GetChangesRequest) -> directory_pb2.GetChangesResponse:
        return await get_changes(source, request, today=TODAY, **kw)  # type: ignore[arg-type]

    return fetch


async def mirror_state(m: DirectoryMirror) -> dict[tuple[int, str], bytes]:
    out = {}
    for kind in ALL:
        for entity_id, digest in await m.digest_entries(kind, TODAY):
            out[(kind, entity_id)] = digest
    return out


async def test_versions_change_only_with_content(mirror: DirectoryMirror, clock: Clock) -> None:
    entities = directory()
    stats = await mirror.apply(update(entities, clock))
    assert stats.changed == len(entities)
    cloud = CloudModel()
    await cloud.sync(feed(mirror))
    versions = {k: c.version for k, c in cloud.held.items()}
    assert len(set(versions.values())) == len(versions)  # every change its own position
    head = mirror.head
    again = await mirror.apply(update(entities, clock))
    assert (again.changed, again.deleted, mirror.head) == (0, 0, head)
    quiet = await cloud.sync(feed(mirror))
    assert not quiet.changes
    slot = next(e for e in entities if e.kind == SLOT)
    await mirror.apply(update([with_remaining(slot, 1)], clock, complete=frozenset()))
    assert mirror.head > head
    changed = await cloud.sync(feed(mirror))
    assert [(c.entity_id, c.version, c.slot.version) for c in changed.changes] == [
        (slot.entity_id, mirror.head, mirror.head)
    ]
    assert changed.changes[0].version > versions[(SLOT, slot.entity_id)]


async def test_a_snapshot_pass_reads_one_point_while_the_mirror_changes(
    mirror: DirectoryMirror, clock: Clock
) -> None:
    entities = directory()
    await mirror.apply(update(entities, clock))
    before = await mirror_state(mirror)
    slots = [e for e in entities if e.kind == SLOT]
    schedules = [e for e in entities if e.kind == SCHEDULE]
    counter = itertools.count()

    async def churn(page_number: int) -> None:
        # Between pages: slots change, a schedule and its slots go, a doctor arrives.
        changed = [with_remaining(s, next(counter) % 3) for s in slots[page_number::7]]
        gone_schedule = schedules[page_number]
        gone = [(SCHEDULE, gone_schedule.entity_id)] + [
            (SLOT, s.entity_id) for s in slots if s.message.schedule_id == gone_schedule.entity_id
        ]
        new = MirrorEntity(
            DOCTOR, f"DR9{page_number}", None, directory_pb2.Doctor(doctor_id=f"DR9{page_number}")
        )
        await mirror.apply(update([*changed, new], clock, complete=frozenset(), deleted=gone))

    cloud = CloudModel()
    last = await cloud.sync(feed(mirror), page_size=9, between_pages=churn)
    assert last.snapshot
    assert len(cloud.pages) > 5
    assert all(p.snapshot for p in cloud.pages)
    # Exactly the state when the pass began: nothing twice, nothing of the churn.
    delivered = cloud.delivered()
    assert len(delivered) == len(set(delivered))
    assert cloud.state() == before
    assert await mirror_state(mirror) != before
    # The next pass from the watermark brings exactly the churn, and the cloud converges.
    incremental = await cloud.sync(feed(mirror), page_size=5)
    assert not incremental.snapshot
    assert cloud.state() == await mirror_state(mirror)
    deletions = [c for p in cloud.pages for c in p.changes if c.WhichOneof("change") == "deleted"]
    assert deletions
    assert all(not c.content_digest for c in deletions)
    quiet = await cloud.sync(feed(mirror))
    assert (len(quiet.changes), quiet.snapshot, quiet.watermark) == (0, False, cloud.watermark)


async def test_an_incremental_pass_reads_one_point_while_the_mirror_changes(
    mirror: DirectoryMirror, clock: Clock
) -> None:
    entities = directory()
    slots = [e for e in entities if e.kind == SLOT]
    await mirror.apply(update(entities, clock))
    cloud = CloudModel()
    await cloud.sync(feed(mirror))
    await mirror.apply(
        update([with_remaining(s, 0) for s in slots[:30]], clock, complete=frozenset())
    )
    at_start = await mirror_state(mirror)

    async def churn(page_number: int) -> None:
        await mirror.apply(
            update([with_remaining(s, 2) for s in slots[:40]], clock, complete=frozenset())
        )

    await cloud.sync(feed(mirror), page_size=4, between_pages=churn)
    delivered = [c.entity_id for p in cloud.pages for c in p.changes]
    assert sorted(delivered) == sorted(s.entity_id for s in slots[:30])
    positions = [c.version for p in cloud.pages for c in p.changes]
    assert positions == sorted(positions)  # log order
    assert cloud.state() == at_start
    await cloud.sync(feed(mirror))
    assert cloud.state() == await mirror_state(mirror)


async def test_a_pass_older_than_the_history_still_converges(tmp_path: Path, clock: Clock) -> None:
    entities = directory()
    slots = [e for e in entities if e.kind == SLOT]
    async with DirectoryMirror(tmp_path / "d.db", clock=clock, history_seconds=10) as mirror:
        await mirror.apply(update(entities, clock))

        async def churn(page_number: int) -> None:
            clock.now += 60  # the pass's point in time falls out of the history
            changed = [with_remaining(s, page_number % 3) for s in slots[page_number::5]]
            await mirror.apply(update(changed, clock, complete=frozenset()))

        cloud = CloudModel()
        await cloud.sync(feed(mirror), page_size=10, between_pages=churn)
        delivered = cloud.delivered()
        assert len(delivered) == len(set(delivered)) == len(entities)
        await cloud.sync(feed(mirror))
        assert cloud.state() == await mirror_state(mirror)


async def test_foreign_future_garbage_and_pruned_watermarks_get_a_snapshot(
    tmp_path: Path, mirror: DirectoryMirror, clock: Clock
) -> None:
    entities = directory(days=1)
    await mirror.apply(update(entities, clock))
    cloud = CloudModel()
    await cloud.sync(feed(mirror))
    good = cloud.watermark
    _, store, seq = good.split(".")
    async with DirectoryMirror(tmp_path / "other.db", clock=clock) as other:
        await other.apply(update(entities, clock))
        foreign = await get_changes(other, directory_pb2.GetChangesRequest(since=good), today=TODAY)
        assert foreign.snapshot
        assert len(foreign.changes) == len(entities)
    for since in (f"m1.{store}.{int(seq) + 10**9}", "full:2026-03-02", "m1..", "x" * 300):
        page = await get_changes(
            mirror, directory_pb2.GetChangesRequest(since=since, page_size=5000), today=TODAY
        )
        assert page.snapshot, since
        assert len(page.changes) == len(entities)
    page = await get_changes(mirror, directory_pb2.GetChangesRequest(since=good), today=TODAY)
    assert not page.snapshot

    # Deletions are kept for tombstone_seconds; a watermark older than a pruned one cannot
    # learn of it, so it gets a snapshot. Newer watermarks keep their increments.
    async with DirectoryMirror(tmp_path / "pruned.db", clock=clock, tombstone_seconds=60) as m:
        await m.apply(update(entities, clock))
        old = CloudModel()
        await old.sync(feed(m))
        await m.apply(
            update([], clock, complete=frozenset(), deleted=[(SLOT, entities[-1].entity_id)])
        )
        recent = CloudModel()
        await recent.sync(feed(m))
        clock.now += 120
        await m.apply(update(entities[:-1], clock))  # prunes the deletion
        assert m.horizon > 0
        stale = await old.sync(feed(m))
        assert stale.snapshot
        assert (SLOT, entities[-1].entity_id) not in old.state()
        fresh = await recent.sync(feed(m))
        assert not fresh.snapshot


async def test_pages_are_bounded_in_entries_bytes_and_time(
    mirror: DirectoryMirror, clock: Clock
) -> None:
    entities = directory(days=4, slots=10)
    await mirror.apply(update(entities, clock))
    total = len(entities)
    # Entries: the default 500 and the cap 5000.
    page = await get_changes(mirror, directory_pb2.GetChangesRequest(), today=TODAY)
    assert len(page.changes) == min(500, total)
    limits = FeedLimits(default_page_size=10, max_page_size=25)
    page = await get_changes(
        mirror, directory_pb2.GetChangesRequest(page_size=10_000), today=TODAY, limits=limits
    )
    assert len(page.changes) == 25
    # Bytes: every page's changes within the bound, and the pass still complete.
    limits = FeedLimits(max_page_bytes=2048)
    token, seen = "", []
    while True:
        page = await get_changes(
            mirror,
            directory_pb2.GetChangesRequest(page_token=token, page_size=5000),
            today=TODAY,
            limits=limits,
        )
        assert page.changes
        assert directory_pb2.GetChangesResponse(changes=page.changes).ByteSize() <= 2048
        seen.extend(c.entity_id for c in page.changes)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == total
    # Time: a page is cut once assembling it took longer than page_seconds.
    ticks = itertools.count()

    def slow_clock() -> float:
        return next(ticks) * 0.25  # every entry "takes" a quarter of a second

    page = await get_changes(
        mirror,
        directory_pb2.GetChangesRequest(page_size=5000),
        today=TODAY,
        limits=FeedLimits(page_seconds=1.0),
        clock=slow_clock,
    )
    assert 1 <= len(page.changes) <= 5
    assert page.next_page_token


async def test_page_tokens_belong_to_one_query_and_one_mirror(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "directory.db"
    entities = directory()
    async with DirectoryMirror(path, clock=clock) as mirror:
        await mirror.apply(update(entities, clock))
        first = await get_changes(
            mirror, directory_pb2.GetChangesRequest(page_size=3, kinds=[SLOT]), today=TODAY
        )
        token = first.next_page_token
        for request, reason in (
            (directory_pb2.GetChangesRequest(page_token=token, kinds=[DOCTOR]), "another query"),
            (directory_pb2.GetChangesRequest(page_token="not-base64!"), "malformed"),
            (directory_pb2.GetChangesRequest(page_token="e30"), "malformed"),  # {}
            (directory_pb2.GetChangesRequest(page_size=-1), "must not be negative"),
            (directory_pb2.GetChangesRequest(kinds=[42]), "unknown entity kind"),
        ):
            with pytest.raises(FeedRequestError) as info:
                await get_changes(mirror, request, today=TODAY)
            assert reason in str(info.value.violations), reason
        second = await get_changes(
            mirror,
            directory_pb2.GetChangesRequest(page_token=token, page_size=3, kinds=[SLOT]),
            today=TODAY,
        )
        assert second.changes[0].entity_id > first.changes[-1].entity_id
    path.write_bytes(b"this is not a database" * 100)  # damaged: rebuilt on open
    async with DirectoryMirror(path, clock=clock) as rebuilt:
        await rebuilt.apply(update(entities, clock))
        with pytest.raises(FeedRequestError) as info:
            await get_changes(
                rebuilt,
                directory_pb2.GetChangesRequest(page_token=token, kinds=[SLOT]),
                today=TODAY,
            )
        assert info.value.violations[0][0] == "page_token"
        assert "rebuilt" in info.value.violations[0][1]


async def test_a_damaged_mirror_file_is_moved_aside_and_rebuilt(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "edge" / "directory.db"
    entities = directory()
    async with DirectoryMirror(path, clock=clock) as mirror:
        await mirror.apply(update(entities, clock))
        store, head = mirror.store_id, mirror.head
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with DirectoryMirror(path, clock=clock) as reopened:  # intact: kept as it was
        assert (reopened.store_id, reopened.head, reopened.size) == (store, head, len(entities))
        assert reopened.data_time is not None
    raw = bytearray(path.read_bytes())
    raw[100:4096] = os.urandom(4096 - 100)  # the schema page and more: corrupt
    path.write_bytes(bytes(raw))
    async with DirectoryMirror(path, clock=clock) as rebuilt:
        assert rebuilt.store_id != store
        assert (rebuilt.size, rebuilt.data_time) == (0, None)
        assert path.with_name("directory.db.damaged").exists()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        await rebuilt.apply(update(entities, clock))
        # Versions go on increasing past the old store's: the cloud's guard accepts them.
        assert rebuilt.head > head
        page = await get_changes(
            rebuilt, directory_pb2.GetChangesRequest(since=f"m1.{store}.{head}"), today=TODAY
        )
        assert page.snapshot


async def test_buckets_filter_snapshots_and_the_digest_matches_the_feed(
    mirror: DirectoryMirror, clock: Clock
) -> None:
    entities = directory()
    await mirror.apply(update(entities, clock))
    cloud = CloudModel()
    await cloud.sync(feed(mirror), page_size=5000)
    digest = await directory_digest(
        mirror, directory_pb2.GetDirectoryDigestRequest(bucket_count=8), today=TODAY
    )
    assert digest.bucket_count == 8
    assert (digest.scope_start_date.year, digest.scope_start_date.day) == (2026, 2)
    for kind in digest.kinds:
        mine = [(k[1], d) for k, d in cloud.state().items() if k[0] == kind.kind]
        assert kind.count == len(mine)
        assert list(kind.bucket_digests) == bucket_digests(mine, 8)
    page = await get_changes(
        mirror,
        directory_pb2.GetChangesRequest(
            page_size=5000,
            kinds=[SLOT],
            buckets=directory_pb2.BucketFilter(bucket_count=8, buckets=[1, 6]),
        ),
        today=TODAY,
    )
    expected = {
        e.entity_id for e in entities if e.kind == SLOT and bucket_of(e.entity_id, 8) in {1, 6}
    }
    assert {c.entity_id for c in page.changes} == expected
    assert all(c.content_digest == content_digest(c.slot) for c in page.changes)
    only = await directory_digest(
        mirror, directory_pb2.GetDirectoryDigestRequest(kinds=[DOCTOR]), today=TODAY
    )
    assert [k.kind for k in only.kinds] == [DOCTOR]
    assert only.bucket_count == 64


async def test_past_days_age_out_without_deletions(mirror: DirectoryMirror, clock: Clock) -> None:
    entities = directory(days=3)
    await mirror.apply(update(entities, clock))
    cloud = CloudModel()
    await cloud.sync(feed(mirror))
    tomorrow = TODAY + dt.timedelta(days=1)
    still = [e for e in entities if e.day is None or e.day >= tomorrow]
    stats = await mirror.apply(update(still, clock, scope=tomorrow))
    assert stats.deleted == 0
    assert stats.aged == len(entities) - len(still)
    page = await get_changes(
        mirror, directory_pb2.GetChangesRequest(since=cloud.watermark), today=tomorrow
    )
    assert not page.changes


async def test_the_mirror_refuses_a_directory_beyond_its_bound(
    tmp_path: Path, clock: Clock
) -> None:
    async with DirectoryMirror(tmp_path / "d.db", clock=clock, max_entities=10) as mirror:
        with pytest.raises(MirrorError, match="more than the bound of 10"):
            await mirror.apply(update(directory(), clock))
        assert mirror.size == 0
