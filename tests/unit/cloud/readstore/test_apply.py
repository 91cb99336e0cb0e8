"""Applying change feeds to the read store: versions, pages, snapshots, garbage."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.readstore import FeedError, HospitalRecord, ReadStore
from cloud.readstore._schema import METADATA
from cloud.sync import SLOTS
from cloud.sync.testing import SyntheticHospital
from hplus.hospital.v1 import directory_pb2

H = "h-apply"
DEP, DOC, SCH, SLOT = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)
ALL = (DEP, DOC, SCH, SLOT)


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[ReadStore]:
    store = await ReadStore.open(db_engine)
    await store.put_hospitals([HospitalRecord(hospital_id=H, name="测试医院")])
    yield store
    await store.close()


async def full_pass(
    store: ReadStore, hospital: SyntheticHospital, kinds=ALL, *, page_size=100, full=False
):
    change_pass = await store.begin_pass(H, kinds, full=full)
    request = directory_pb2.GetChangesRequest(
        since=change_pass.since, kinds=kinds, page_size=page_size
    )
    while True:
        page = hospital.get_changes(request)
        if await change_pass.apply(page):
            return change_pass.result
        request.page_token = page.next_page_token


async def test_migrations_match_the_schema_module(store: ReadStore) -> None:
    def columns(conn: sa.Connection) -> dict[str, list[str]]:
        insp = sa.inspect(conn)
        return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in METADATA.tables}

    async with store.primary.connect() as conn:
        migrated = await conn.run_sync(columns)
    described = {t.name: sorted(c.name for c in t.columns) for t in METADATA.tables.values()}
    assert migrated == described


async def test_full_then_incremental_applies_only_what_changed(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=3, days=2, slots_per_session=4)
    result = await full_pass(store, hospital, page_size=7)
    assert result.snapshot
    assert result.done
    assert result.pages > 3
    assert await store.count(H, SLOT) == len(hospital.ids(SLOT)) == 3 * 2 * 4
    assert await store.count(H, DOC) == 3
    assert (await store.doctor_departments(H))[f"{H}-doc-0"] == [f"{H}-dep-0"]

    booked = hospital.book(2)
    deleted = hospital.ids(SLOT)[-1]
    hospital.delete(SLOT, deleted)
    again = await full_pass(store, hospital)
    assert not again.snapshot
    assert again.changes == len(set(booked) | {deleted})
    assert again.deleted == 1
    assert await store.count(H, SLOT) == 3 * 2 * 4 - 1

    status = (await store.status(H))[0]
    assert status.kinds[SLOT].watermark == f"e1:{hospital._seq}"
    assert status.kinds[SLOT].failures == 0
    assert status.flag == ""


async def test_a_lower_version_never_overwrites_and_is_flagged(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=2)
    slot_id = hospital.ids(SLOT)[0]
    stale = hospital.get_changes(directory_pb2.GetChangesRequest(kinds=[SLOT]))
    old = next(c for c in stale.changes if c.entity_id == slot_id)
    slot = hospital.get(SLOT, slot_id)
    assert isinstance(slot, directory_pb2.Slot)
    slot.remaining, slot.status = 0, directory_pb2.SLOT_STATUS_BUSY
    hospital.put(slot)  # version 2
    await full_pass(store, hospital)
    assert await _version(store, slot_id) == 2
    page = directory_pb2.GetChangesResponse(changes=[old], watermark="e1:999")
    page.data_time.GetCurrentTime()
    change_pass = await store.begin_pass(H, SLOTS)
    assert change_pass.since  # an incremental pass
    await change_pass.apply(page)
    assert await _version(store, slot_id) == 2
    assert change_pass.result.stale == 1
    assert "feed went back: 1 change(s) older than the store" in (await store.status(H))[0].flag


async def test_data_time_going_back_is_flagged_and_as_of_never_moves_back(
    store: ReadStore,
) -> None:
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=1)
    await full_pass(store, hospital, kinds=SLOTS)
    before = (await store.status(H))[0].kinds[SLOT].data_time
    assert before is not None
    page = directory_pb2.GetChangesResponse(watermark="e1:1")
    page.data_time.FromDatetime(before - dt.timedelta(hours=1))
    change_pass = await store.begin_pass(H, SLOTS)
    assert await change_pass.apply(page)
    status = (await store.status(H))[0]
    assert "data_time" in status.flag
    assert status.kinds[SLOT].data_time == before


async def _version(store: ReadStore, slot_id: str) -> int:
    from cloud.readstore._schema import SLOTS as T

    async with store.primary.connect() as conn:
        return int(
            (await conn.execute(sa.select(T.c.version).where(T.c.slot_id == slot_id))).scalar_one()
        )


async def test_a_snapshot_deletes_what_it_did_not_contain(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=2, days=1, slots_per_session=3)
    await full_pass(store, hospital)
    gone = hospital.ids(SLOT)[:2]
    for slot_id in gone:
        hospital.delete(SLOT, slot_id)
    hospital.reset()  # the edge lost its log: it answers the old watermark with a snapshot
    result = await full_pass(store, hospital, kinds=SLOTS, page_size=2)
    assert result.snapshot
    assert result.deleted == 2
    assert await store.count(H, SLOT) == 2 * 3 - 2
    assert await store.count(H, DOC) == 2  # kinds not requested are untouched


async def test_a_deletion_leaves_a_tombstone_against_older_copies(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=2)
    first = hospital.get_changes(directory_pb2.GetChangesRequest(kinds=[SLOT]))
    await full_pass(store, hospital)
    slot_id = hospital.ids(SLOT)[0]
    hospital.delete(SLOT, slot_id)
    await full_pass(store, hospital, kinds=SLOTS)
    assert await store.count(H, SLOT) == 1
    # The old copy arrives again (at-least-once): it must not resurrect the slot.
    old = [c for c in first.changes if c.entity_id == slot_id]
    page = directory_pb2.GetChangesResponse(changes=old, watermark="e1:1")
    change_pass = await store.begin_pass(H, SLOTS)
    await change_pass.apply(page)
    assert await store.count(H, SLOT) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: setattr(c, "version", 0), "version: must be > 0"),
        (lambda c: setattr(c, "entity_id", ""), "entity_id: must not be empty"),
        (lambda c: setattr(c, "entity_id", "x" * 129), "entity_id: longer than 128"),
        (lambda c: setattr(c, "content_digest", b"short"), "content_digest: must be empty or 32"),
        (lambda c: setattr(c.slot, "capacity", -1), "slot.capacity"),
        (lambda c: setattr(c, "kind", DEP), "department or deleted=true is required"),
        (lambda c: c.ClearField("change"), "slot or deleted=true is required"),
        (lambda c: setattr(c.slot, "slot_id", "other"), "differs from entity_id"),
    ],
)
async def test_a_garbage_page_writes_nothing(store: ReadStore, damage, message) -> None:
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=3)
    page = hospital.get_changes(directory_pb2.GetChangesRequest(kinds=[SCH, SLOT]))
    damage(page.changes[-1])
    change_pass = await store.begin_pass(H, (DEP, SCH, SLOT))
    with pytest.raises(FeedError, match=message):
        await change_pass.apply(page)
    assert await store.count(H, SLOT) == 0
    assert await store.count(H, SCH) == 0


async def test_an_edge_older_than_1_2_0_sends_no_content_digest_and_is_synced(
    store: ReadStore,
) -> None:
    """Edges up to five releases behind must sync: before 1.2.0 the feed had no
    content_digest, so the store computes it from the entity (the edge's definition)."""
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=2)
    page = hospital.get_changes(directory_pb2.GetChangesRequest())
    sent = {c.entity_id: bytes(c.content_digest) for c in page.changes}
    for change in page.changes:
        change.ClearField("content_digest")
    change_pass = await store.begin_pass(H, ALL)
    await change_pass.apply(page)
    assert await store.count(H, SLOT) == len(hospital.ids(SLOT))
    theirs = hospital.get_digest(directory_pb2.GetDirectoryDigestRequest(bucket_count=4))
    mine = await store.digests(H, ALL, 4, hospital.start)
    for kind in theirs.kinds:
        assert mine[kind.kind][1] == list(kind.bucket_digests)
    assert all(len(d) == 32 for d in sent.values())


async def test_a_last_page_without_watermark_is_refused(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=1, days=1, slots_per_session=1)
    page = hospital.get_changes(directory_pb2.GetChangesRequest(kinds=list(SLOTS)))
    page.watermark = ""
    change_pass = await store.begin_pass(H, SLOTS)
    with pytest.raises(FeedError, match="watermark"):
        await change_pass.apply(page)
    assert (await store.status(H))[0].kinds == {}


async def test_digests_of_the_store_equal_the_hospitals(store: ReadStore) -> None:
    hospital = SyntheticHospital(H, doctors=2, days=2, slots_per_session=3)
    await full_pass(store, hospital)
    theirs = hospital.get_digest(directory_pb2.GetDirectoryDigestRequest(bucket_count=8))
    mine = await store.digests(H, ALL, 8, hospital.start)
    for kind in theirs.kinds:
        assert mine[kind.kind] == (kind.count, list(kind.bucket_digests))
    hospital.edit_silently(SLOT, hospital.ids(SLOT)[0], remaining=0)
    theirs = hospital.get_digest(directory_pb2.GetDirectoryDigestRequest(bucket_count=8))
    slot_digests = next(k for k in theirs.kinds if k.kind == SLOT).bucket_digests
    assert sum(a != b for a, b in zip(slot_digests, mine[SLOT][1], strict=True)) == 1


async def test_prune_ages_out_past_sessions(store: ReadStore) -> None:
    start = dt.date.today() - dt.timedelta(days=5)
    hospital = SyntheticHospital(H, doctors=1, days=7, slots_per_session=1, start=start)
    await full_pass(store, hospital)
    removed = await store.prune(
        dt.date.today() - dt.timedelta(days=2), tombstones_before=dt.datetime.now(dt.UTC)
    )
    assert removed == 3 * 2
    assert await store.count(H, SCH) == 4


async def test_large_pages_keep_the_version_guard(store: ReadStore) -> None:
    # Pages of 64 changes or more are merged through COPY on PostgreSQL: same rules.
    hospital = SyntheticHospital(H, doctors=3, days=2, slots_per_session=16)
    old = hospital.get_changes(directory_pb2.GetChangesRequest(kinds=[SLOT], page_size=5000))
    assert len(old.changes) >= 64
    await full_pass(store, hospital, page_size=5000)
    assert await store.count(H, SLOT) == 96
    booked = set(hospital.book(70))
    result = await full_pass(store, hospital, kinds=SLOTS, page_size=5000)
    assert result.written == len(booked)
    before = await store.digests(H, [SLOT], 4, hospital.start)
    replay = await store.begin_pass(H, SLOTS)
    old.watermark = "e1:0"
    await replay.apply(old)  # every change older than the store's: nothing moves back
    assert await store.digests(H, [SLOT], 4, hospital.start) == before
    assert replay.result.written == 0
    assert replay.result.stale == len(booked)
