"""The sync engine over in-memory hospitals (the HospitalSource seam) and a real database."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.config import SyncConfig
from cloud.readstore import ALL_KINDS, HospitalRecord, ReadStore
from cloud.sync import DIRECTORY, SLOTS, SyncEngine
from cloud.sync.testing import FakeHospitals, SyntheticHospital
from hplus.hospital.v1 import directory_pb2
from tests.support.waiting import until

SLOT = directory_pb2.ENTITY_KIND_SLOT
FAST = SyncConfig(
    slot_interval=0.2,
    directory_interval=0.5,
    drift_interval=3600,
    concurrency=2,
    call_timeout=30.0,
    page_size=50,
    bucket_count=16,
)


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[ReadStore]:
    store = await ReadStore.open(db_engine)
    yield store
    await store.close()


async def hospitals(store: ReadStore, n: int, **kw) -> list[SyntheticHospital]:
    out = [SyntheticHospital(f"h-{i}", seed=i, doctors=2, days=2, slots_per_session=3, **kw)
           for i in range(n)]  # fmt: skip
    await store.put_hospitals([HospitalRecord(hospital_id=h.hospital_id, name="医院") for h in out])
    return out


async def synced(store: ReadStore, hospital_ids: list[str]) -> bool:
    states = {s.hospital_id: s for s in await store.status()}
    return all(h in states and states[h].last_success is not None for h in hospital_ids)


async def test_first_contact_syncs_everything_then_follows_changes(store: ReadStore) -> None:
    hs = await hospitals(store, 3)
    source = FakeHospitals(hs)
    async with SyncEngine(store, source, config=FAST, node_id="n1"):
        await until(lambda: synced(store, [h.hospital_id for h in hs]))
        first = [r for h, r in source.requests if h == "h-0"]
        assert first[0].since == ""  # first contact: a full pass
        for h in hs:
            assert await store.count(h.hospital_id, SLOT) == 2 * 2 * 3
        hs[0].book(3)

        async def in_step() -> bool:
            theirs = hs[0].get_digest(directory_pb2.GetDirectoryDigestRequest(bucket_count=4))
            mine = await store.digests("h-0", ALL_KINDS, 4, hs[0].start)
            return all(mine[k.kind][1] == list(k.bucket_digests) for k in theirs.kinds)

        await until(in_step)
        later = [r for h, r in source.requests if h == "h-0" and r.since]
        assert later
        assert all(r.since.startswith("e1:") for r in later)
    status = (await store.status("h-0"))[0]
    assert status.lease_owner is None  # released at shutdown
    assert not status.stale(dt.datetime.now(dt.UTC), 60)


async def test_a_hanging_hospital_does_not_delay_the_others(store: ReadStore) -> None:
    hs = await hospitals(store, 5)
    source = FakeHospitals(hs)
    source.hanging.add("h-0")
    try:
        async with SyncEngine(store, source, config=FAST, node_id="n1"):
            # Concurrency 2: h-0 holds one place the whole time; the four others share the
            # other and all complete their first sync.
            await until(lambda: synced(store, [f"h-{i}" for i in range(1, 5)]), limit=20)
            assert source.calls["h-0"] == 1
    finally:
        source.release()
    status = (await store.status("h-0"))[0]
    assert status.last_success is None


async def test_calls_have_deadlines(store: ReadStore) -> None:
    hs = await hospitals(store, 1)
    source = FakeHospitals(hs)
    source.hanging.add("h-0")
    config = SyncConfig(call_timeout=0.2, page_size=50)
    engine = SyncEngine(store, source, config=config, node_id="n1")
    try:
        assert await engine.sync_kinds("h-0", SLOTS) is None
    finally:
        source.release()
    kind = (await store.status("h-0"))[0].kinds[SLOT]
    assert kind.failures == 1
    assert "DEADLINE_EXCEEDED" in kind.last_error


async def test_offline_hospitals_are_skipped_and_marked_stale(store: ReadStore) -> None:
    hs = await hospitals(store, 2)
    source = FakeHospitals(hs)
    source.offline.add("h-1")
    source.remote.add("h-0")
    engine = SyncEngine(store, source, config=FAST, node_id="n1")
    await engine.run_round(wait=True)
    assert source.calls == {}  # neither was called: one is elsewhere, one nowhere
    states = {s.hospital_id: s for s in await store.status()}
    assert states["h-1"].offline_since is not None
    assert states["h-1"].stale(states["h-1"].offline_since, 1e9)
    assert states["h-0"].offline_since is None
    source.offline.clear()
    source.remote.clear()
    engine.mark_due("h-1")
    await engine.run_round(wait=True)
    assert await synced(store, ["h-1"])
    assert (await store.status("h-1"))[0].offline_since is None


async def test_a_garbage_feed_is_flagged_and_never_written(
    store: ReadStore, caplog: pytest.LogCaptureFixture
) -> None:
    hs = await hospitals(store, 1)
    source = FakeHospitals(hs)
    engine = SyncEngine(store, source, config=FAST, node_id="n1")
    source.garbage.add("h-0")
    with caplog.at_level(logging.WARNING, logger="cloud.sync"):
        assert await engine.sync_kinds("h-0", SLOTS) is None
    assert await store.count("h-0", SLOT) == 0  # the first page was refused whole
    status = (await store.status("h-0"))[0]
    assert "bad feed" in status.flag
    assert "version: must be > 0" in status.flag
    assert status.kinds[SLOT].failures == 1
    assert len([r for r in caplog.records if "bad feed" in r.getMessage()]) == 1
    source.garbage.clear()
    result = await engine.sync_kinds("h-0", SLOTS)
    assert result is not None
    assert result.done
    assert await store.count("h-0", SLOT) == 2 * 2 * 3


async def test_drift_is_found_by_digest_and_only_differing_buckets_are_reread(
    store: ReadStore,
) -> None:
    hs = await hospitals(store, 1)
    source = FakeHospitals(hs)
    engine = SyncEngine(store, source, config=FAST, node_id="n1")
    for kinds in (DIRECTORY, SLOTS):
        await engine.sync_kinds("h-0", kinds)
    clean = await engine.check_drift("h-0")
    assert clean is not None
    assert clean.differing == {}
    edited = hs[0].ids(SLOT)[1]
    hs[0].edit_silently(SLOT, edited, remaining=0, status=directory_pb2.SLOT_STATUS_BUSY)
    before = len(source.requests)
    drift = await engine.check_drift("h-0")
    assert drift is not None
    assert list(drift.differing) == [SLOT]
    assert len(drift.differing[SLOT]) == 1
    resync = source.requests[before:]
    assert len(resync) == 1
    assert list(resync[0][1].buckets.buckets) == drift.differing[SLOT]
    page = await store.queries.list_slots("h-0", start_date=hs[0].start, doctor_id="h-0-doc-0",
                                          end_date=hs[0].start, limit=500)  # fmt: skip
    assert {s.slot_id: s.remaining for s in page.slots}.get(edited, 0) == 0
    again = await engine.check_drift("h-0")
    assert again is not None
    assert again.differing == {}
    assert "in step" in (await store.status("h-0"))[0].drift_result


async def test_two_nodes_never_sync_one_hospital_at_once(store: ReadStore) -> None:
    hs = await hospitals(store, 1)
    a_source, b_source = FakeHospitals(hs), FakeHospitals(hs)
    a = SyncEngine(store, a_source, config=FAST, node_id="node-a")
    b = SyncEngine(store, b_source, config=FAST, node_id="node-b")
    assert await store.acquire_lease("h-0", "node-a", 60)
    await b.run_round(wait=True)
    assert b_source.calls == {}
    await a.run_round(wait=True)
    assert a_source.calls["h-0"] >= 2
    await a.shutdown()  # hands the lease on
    b.mark_due("h-0")
    await b.run_round(wait=True)
    assert b_source.calls.get("h-0", 0) >= 1
    assert (await store.status("h-0"))[0].lease_owner == "node-b"
    await b.shutdown()


async def test_a_pass_cut_short_by_the_hospital_resumes_from_the_saved_watermark(
    store: ReadStore,
) -> None:
    hs = await hospitals(store, 1)
    source = FakeHospitals(hs)
    engine = SyncEngine(store, source, config=SyncConfig(page_size=5), node_id="n1")
    await engine.sync_kinds("h-0", SLOTS)
    watermark = (await store.status("h-0"))[0].kinds[SLOT].watermark
    hs[0].book(8)
    cut = asyncio.Event()

    async def vanish(hospital_id: str, number: int) -> None:
        if number == 2 and not cut.is_set():
            cut.set()
            raise OSError("connection to the hospital reset")

    source.on_page = vanish
    with pytest.raises(OSError, match="reset"):
        await engine.sync_kinds("h-0", SLOTS)
    assert (await store.status("h-0"))[0].kinds[SLOT].watermark == watermark
    before = len(source.requests)
    result = await engine.sync_kinds("h-0", SLOTS)
    assert result is not None
    assert result.done
    assert source.requests[before][1].since == watermark
    theirs = hs[0].get_digest(
        directory_pb2.GetDirectoryDigestRequest(bucket_count=4, kinds=list(SLOTS))
    )
    mine = await store.digests("h-0", SLOTS, 4, hs[0].start)
    for kind in theirs.kinds:
        assert mine[kind.kind][1] == list(kind.bucket_digests)


async def test_a_node_that_lost_the_lease_reads_the_watermark_again(store: ReadStore) -> None:
    hs = await hospitals(store, 1)
    a_source, b_source = FakeHospitals(hs), FakeHospitals(hs)
    short = SyncConfig(lease_seconds=0.2, page_size=50, drift_interval=3600)
    a = SyncEngine(store, a_source, config=short, node_id="node-a")
    b = SyncEngine(store, b_source, config=SyncConfig(page_size=50), node_id="node-b")
    await a.run_round(wait=True)
    assert await synced(store, ["h-0"])
    # A's lease lapses (A is busy elsewhere); B takes the hospital and moves its watermark.
    await until(lambda: store.acquire_lease("h-0", "node-b", 60))
    hs[0].book(2)
    await b.run_round(wait=True)
    moved = (await store.status("h-0"))[0].kinds[SLOT].watermark
    a.mark_due("h-0")
    await a.run_round(wait=True)
    assert a_source.calls["h-0"] == 2  # only its first sync: B holds the lease now
    await b.shutdown()
    a.mark_due("h-0", SLOTS)
    await a.run_round(wait=True)
    assert a_source.requests[-1][1].since == moved  # not what A itself saved earlier
    await a.shutdown()
