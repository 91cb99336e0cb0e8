"""The read store on a real PostgreSQL primary with a real streaming standby.

Reads go to the standby while it is current, to the primary when it lags or is down; writes
go to the primary only; a sync cut off from the primary resumes from its watermark.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from cloud.config import SyncConfig
from cloud.readstore import HospitalRecord, ReadStore
from cloud.sync import SLOTS, SyncEngine
from cloud.sync.testing import FakeHospitals, SyntheticHospital
from hplus.hospital.v1 import directory_pb2
from tests.support.pg_standby import PgPair, pg_pair
from tests.support.waiting import until
from tools.proxy import Proxy

pytestmark = pytest.mark.integration


@pytest.fixture
def pair() -> Iterator[PgPair]:
    with pg_pair() as started:
        yield started


async def open_store(pair: PgPair, *, max_lag: float) -> ReadStore:
    return await ReadStore.open(
        pair.primary_url,
        replica_urls=[pair.standby_url],
        max_replica_lag=max_lag,
        replica_check_interval=0.2,
    )


@pytest.fixture
async def store(pair: PgPair) -> AsyncIterator[ReadStore]:
    store = await open_store(pair, max_lag=3600.0)
    yield store
    await store.close()


async def standby_in_use(store: ReadStore) -> None:
    """Wait until the checker has found the standby streaming and current."""
    await until(lambda: store.replicas.reader() is not store.replicas.primary, limit=30)


async def in_recovery(store: ReadStore) -> bool:
    async with store.replicas.read() as conn:
        return bool((await conn.execute(sa.text("SELECT pg_is_in_recovery()"))).scalar())


async def names(store: ReadStore) -> set[str]:
    return {h.hospital_id for h in (await store.queries.search_hospitals()).hospitals}


async def on_standby(pair: PgPair, sql: str) -> None:
    from cloud.db import create_engine

    engine = create_engine(pair.standby_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


async def test_reads_are_served_by_the_standby_and_see_the_primarys_writes(
    pair: PgPair, store: ReadStore
) -> None:
    await standby_in_use(store)
    assert await in_recovery(store)  # the connection reads use is the standby's
    await store.put_hospitals([HospitalRecord(hospital_id="a", name="甲医院")])
    await until(lambda: names(store), limit=10)  # replicated, then read from the standby
    assert await names(store) == {"a"}

    # Freeze the standby: a new write on the primary stays invisible to reads, which
    # proves they are served by the standby, not the primary.
    await on_standby(pair, "SELECT pg_wal_replay_pause()")
    await store.put_hospitals([HospitalRecord(hospital_id="b", name="乙医院")])
    async with store.primary.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM rs_hospitals"))).scalar() == 2
    await store.replicas.wait_checked()
    assert await names(store) == {"a"}
    await on_standby(pair, "SELECT pg_wal_replay_resume()")
    await until(lambda: _has(store, "b"))


async def _has(store: ReadStore, hospital_id: str) -> bool:
    return hospital_id in await names(store)


async def test_a_lagging_standby_gets_no_reads(pair: PgPair) -> None:
    store = await open_store(pair, max_lag=1.0)
    try:
        await store.put_hospitals([HospitalRecord(hospital_id="a", name="甲医院")])
        await standby_in_use(store)
        await until(lambda: _has(store, "a"))
        assert await in_recovery(store)
        await on_standby(pair, "SELECT pg_wal_replay_pause()")
        await store.put_hospitals([HospitalRecord(hospital_id="b", name="乙医院")])
        # Within a check interval of the lag passing 1 s, reads move to the primary.
        await until(lambda: store.replicas.reader() is store.replicas.primary, limit=20)
        assert not await in_recovery(store)
        assert await names(store) == {"a", "b"}
        assert store.replicas.replicas[0].lag > 1.0
        assert not store.replicas.replicas[0].error  # lagging, not unreachable
        await on_standby(pair, "SELECT pg_wal_replay_resume()")
        await standby_in_use(store)
        assert await in_recovery(store)
    finally:
        await store.close()


async def test_a_standby_stopped_mid_test_sends_reads_to_the_primary(
    pair: PgPair, store: ReadStore
) -> None:
    await store.put_hospitals([HospitalRecord(hospital_id="a", name="甲医院")])
    await standby_in_use(store)
    await until(lambda: _has(store, "a"))
    assert await in_recovery(store)
    pair.stop_standby()
    # The very next read finds the standby gone and is answered by the primary.
    assert await names(store) == {"a"}
    assert not await in_recovery(store)
    await store.replicas.wait_checked()
    assert store.replicas.reader() is store.replicas.primary
    assert store.replicas.replicas[0].error
    pair.start_standby()
    await standby_in_use(store)
    assert await in_recovery(store)


async def test_the_primary_lost_mid_sync_resumes_from_the_watermark(pair: PgPair) -> None:
    proxy = Proxy("127.0.0.1", pair.primary_port)
    await proxy.start()
    store = await ReadStore.open(pair.url(proxy.port))
    try:
        await store.put_hospitals([HospitalRecord(hospital_id="h", name="医院")])
        hospital = SyntheticHospital("h", doctors=3, days=3, slots_per_session=4)
        source = FakeHospitals([hospital])
        engine = SyncEngine(store, source, config=SyncConfig(page_size=10), node_id="n1")
        assert await engine.sync_kinds("h", SLOTS) is not None
        watermark = (await store.status("h"))[0].kinds[directory_pb2.ENTITY_KIND_SLOT].watermark
        hospital.book(30)

        async def lose_primary(hospital_id: str, number: int) -> None:
            if number == 2:
                await proxy.cut()

        source.on_page = lose_primary
        with pytest.raises((SQLAlchemyError, OSError)):
            await engine.sync_kinds("h", SLOTS)
        source.on_page = None
        await proxy.restore()
        before = len(source.requests)
        result = await engine.sync_kinds("h", SLOTS)
        assert result is not None
        assert result.done
        assert source.requests[before][1].since == watermark
        theirs = hospital.get_digest(
            directory_pb2.GetDirectoryDigestRequest(bucket_count=8, kinds=list(SLOTS))
        )
        mine = await store.digests("h", SLOTS, 8, hospital.start)
        for kind in theirs.kinds:
            assert mine[kind.kind][1] == list(kind.bucket_digests)
    finally:
        await store.close()
        await proxy.close()


async def test_a_silent_standby_cannot_hold_reads(pair: PgPair) -> None:
    # The standby behind a proxy that stops moving bytes: no reset, no answer (a dead
    # host behind a NAT). Reads must go to the primary within the check timeout.
    proxy = Proxy("127.0.0.1", pair.standby_port)
    await proxy.start()
    store = await ReadStore.open(
        pair.primary_url,
        replica_urls=[pair.url(proxy.port)],
        max_replica_lag=3600.0,
        replica_check_interval=0.2,
    )
    try:
        await store.put_hospitals([HospitalRecord(hospital_id="a", name="甲医院")])
        await standby_in_use(store)
        await until(lambda: _has(store, "a"))
        proxy.blackhole()
        async with asyncio.timeout(store.replicas.check_timeout * 3 + 5):
            assert await names(store) == {"a"}
        await until(lambda: store.replicas.reader() is store.replicas.primary)
        assert not await in_recovery(store)
    finally:
        await proxy.close()
        await store.close()
