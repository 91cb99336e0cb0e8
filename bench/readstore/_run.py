"""The read store benchmark: full and incremental sync of many hospitals, then ListSlots.

1. **Apply throughput.** N hospitals (5 doctors, 7 days of morning sessions, 16 timed slots
   each: ~600 rows a hospital) are fully synced into PostgreSQL by the real `SyncEngine`
   (leases, validation, version guards, one transaction per page) from a pluggable source
   of hospitals. Baseline, in the same run and database: the same rows written by plain
   ``executemany`` INSERTs into tables of the same shape, no checks: the database's own
   ceiling for this work. Then 1% of every hospital's slots change and an incremental
   round runs (the sync lag when all hospitals change at once).
2. **ListSlots.** ``ReadQueries.list_slots`` (one doctor, one day: what a patient asks
   most) at concurrency 64 against the synced store. Baseline: the same SELECT through
   SQLAlchemy Core without our query layer and the cloud.v1 conversion, so the ratio is our
   overhead. (The issue's comparison with the same read forwarded through the tunnel needs
   the patient API servicer; this measures the store side of it.)

Sources of hospitals (``--source``): ``synthetic`` (in-process `SyntheticHospital`s through
`FakeHospitals`). A fleet of real edges (tools.fleet_sim, being built) plugs in as another
entry of `SOURCES` returning a `HospitalSource` (e.g. `RouterSource` of a node they dial).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.config import SyncConfig
from cloud.readstore import HospitalRecord, ReadStore
from cloud.sync import SLOTS, HospitalSource, SyncEngine
from cloud.sync.testing import FakeHospitals, SyntheticHospital
from hplus.hospital.v1 import directory_pb2

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclasses.dataclass
class Fleet:
    """What a source provides: the hospitals' ids and how to reach them."""

    hospital_ids: list[str]
    source: HospitalSource
    change: Callable[[float], Awaitable[int]]
    """Change that fraction of every hospital's slots; returns how many changed."""
    baseline_rows: Callable[[], list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]]
    """Per hospital, plain rows of its schedules and slots (the INSERT baseline)."""


async def synthetic(count: int) -> Fleet:
    """In-process hospitals of the benchmark's shape."""
    hospitals = [
        SyntheticHospital(f"bench-{i:05d}", seed=i, doctors=5, days=7, slots_per_session=16)
        for i in range(count)
    ]
    source = FakeHospitals(hospitals)

    async def change(fraction: float) -> int:
        total = 0
        for h in hospitals:
            total += len(h.book(max(1, int(len(h.ids(directory_pb2.ENTITY_KIND_SLOT)) * fraction))))
        return total

    def rows() -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
        out = []
        now = dt.datetime.now(dt.UTC)
        for h in hospitals:
            page = h.get_changes(directory_pb2.GetChangesRequest(page_size=5000))
            sch, slo = [], []
            for c in page.changes:
                if c.HasField("schedule"):
                    s = c.schedule
                    sch.append({
                        "hospital_id": h.hospital_id, "schedule_id": s.schedule_id,
                        "version": c.version, "content_digest": c.content_digest,
                        "bucket_key": 0, "department_id": s.department_id,
                        "doctor_id": s.doctor_id, "clinic_type": s.clinic_type,
                        "date": dt.date(s.date.year, s.date.month, s.date.day),
                        "period": s.period, "status": s.status, "slot_mode": s.slot_mode,
                        "capacity": s.capacity, "remaining": s.remaining, "synced_at": now,
                    })  # fmt: skip
                elif c.HasField("slot"):
                    t = c.slot
                    start = t.start_time.ToDatetime(dt.UTC)
                    slo.append({
                        "hospital_id": h.hospital_id, "slot_id": t.slot_id,
                        "version": c.version, "content_digest": c.content_digest,
                        "bucket_key": 0, "schedule_id": t.schedule_id, "date": start.date(),
                        "start_at": start, "end_at": t.end_time.ToDatetime(dt.UTC),
                        "status": t.status, "capacity": t.capacity, "remaining": t.remaining,
                        "ticket_number": 0, "synced_at": now,
                    })  # fmt: skip
            out.append((h.hospital_id, sch, slo))
        return out

    return Fleet([h.hospital_id for h in hospitals], source, change, rows)


SOURCES: dict[str, Callable[[int], Awaitable[Fleet]]] = {"synthetic": synthetic}
"""Where the hospitals come from (``--source``)."""


@asynccontextmanager
async def _schema(url: str):  # type: ignore[no-untyped-def]
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(url)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        url,
        connect_args={"server_settings": {"search_path": schema}},
        pool_size=20,
        max_overflow=50,
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def _reflect(engine: AsyncEngine, *names: str) -> list[sa.Table]:
    """The store's tables as the database has them (the bench uses no private module)."""
    meta = sa.MetaData()
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: [sa.Table(n, meta, autoload_with=c) for n in names])


async def _baseline_insert(engine: AsyncEngine, fleet: Fleet) -> tuple[float, int]:
    """Plain INSERTs of the same schedules and slots into copies of the tables."""
    async with engine.begin() as conn:
        for name in ("rs_schedules", "rs_slots"):
            # Same columns, keys and indexes: the database does the same index work.
            await conn.execute(sa.text(f"CREATE TABLE base_{name} (LIKE {name} INCLUDING ALL)"))
    tables = await _reflect(engine, "base_rs_schedules", "base_rs_slots")
    per_hospital = fleet.baseline_rows()
    gate = asyncio.Semaphore(16)
    rows = sum(len(a) + len(b) for _, a, b in per_hospital)

    async def one(sch: list[dict[str, Any]], slo: list[dict[str, Any]]) -> None:
        async with gate, engine.begin() as conn:
            await conn.execute(sa.insert(tables[0]), sch)
            await conn.execute(sa.insert(tables[1]), slo)

    start = time.perf_counter()
    await asyncio.gather(*(one(a, b) for _, a, b in per_hospital))
    return time.perf_counter() - start, rows


async def _rows(store: ReadStore) -> int:
    total = 0
    async with store.primary.connect() as conn:
        for name in ("rs_departments", "rs_doctors", "rs_schedules", "rs_slots"):
            total += (await conn.execute(sa.text(f"SELECT count(*) FROM {name}"))).scalar_one()
    return int(total)


async def _load(
    calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "calls_per_s": calls / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def run(
    *, hospitals: int, url: str, source: str, calls: int, concurrency: int
) -> dict[str, Any]:
    """Run both parts and print the table; returns the JSON summary."""
    t0 = time.perf_counter()
    fleet = await SOURCES[source](hospitals)
    print(f"{hospitals} hospitals from source {source!r} ready in {time.perf_counter() - t0:.1f}s")
    config = SyncConfig(concurrency=16, page_size=5000)
    async with _schema(url) as engine:
        store = await ReadStore.open(engine)
        try:
            await store.put_hospitals(
                [
                    HospitalRecord(hospital_id=h, name=f"基准医院{h[-5:]}")
                    for h in fleet.hospital_ids
                ]
            )
            sync = SyncEngine(store, fleet.source, config=config, node_id="bench")
            start = time.perf_counter()
            await sync.run_round(wait=True)
            full_s = time.perf_counter() - start
            rows = await _rows(store)
            failed = [s.hospital_id for s in await store.status() if s.last_success is None]
            base_s, base_rows = await _baseline_insert(engine, fleet)

            changed = await fleet.change(0.01)
            for h in fleet.hospital_ids:  # sessions and slots due, as every slot_interval
                sync.mark_due(h, SLOTS)
            start = time.perf_counter()
            await sync.run_round(wait=True)
            incr_s = time.perf_counter() - start

            rng = random.Random(7)
            today = dt.date.today()
            targets = [(rng.choice(fleet.hospital_ids), rng.randrange(5)) for _ in range(calls)]

            # What a patient asks most: one doctor's slots on one day (16 here).
            async def list_slots(i: int) -> object:
                h, d = targets[i]
                return await store.queries.list_slots(
                    h, start_date=today + dt.timedelta(days=i % 7), doctor_id=f"{h}-doc-{d}"
                )

            schedules, slots = await _reflect(engine, "rs_schedules", "rs_slots")
            plain = (
                sa.select(slots, schedules.c.date.label("s_date"))
                .join(schedules, sa.and_(schedules.c.hospital_id == slots.c.hospital_id,
                                         schedules.c.schedule_id == slots.c.schedule_id))
                .where(schedules.c.hospital_id == sa.bindparam("h"),
                       schedules.c.doctor_id == sa.bindparam("d"),
                       schedules.c.date == sa.bindparam("day"))
                .order_by(schedules.c.date, slots.c.start_at, slots.c.slot_id)
                .limit(51)
            )  # fmt: skip
            reads = store.primary.execution_options(isolation_level="AUTOCOMMIT")

            async def raw(i: int) -> object:
                h, d = targets[i]
                day = today + dt.timedelta(days=i % 7)
                async with reads.connect() as conn:
                    params = {"h": h, "d": f"{h}-doc-{d}", "day": day}
                    return (await conn.execute(plain, params)).all()

            # Planner statistics, as autovacuum would have them after a load this size.
            async with engine.begin() as conn:
                await conn.execute(sa.text("ANALYZE"))

            sample = await list_slots(0)
            assert sample.slots, "the benchmark read returned no slots"  # type: ignore[attr-defined]
            await _load(min(calls, 500), concurrency, raw)  # warm both paths
            await _load(min(calls, 500), concurrency, list_slots)
            # Interleaved three times, median of each: the machine is shared, and load that
            # comes and goes would otherwise favour whichever ran in the quieter moment.
            runs: dict[str, list[dict[str, float]]] = {"raw": [], "ours": []}
            for _ in range(3):
                runs["raw"].append(await _load(calls // 3, concurrency, raw))
                runs["ours"].append(await _load(calls // 3, concurrency, list_slots))
            base_q, ours_q = _median(runs["raw"]), _median(runs["ours"])
        finally:
            await store.close()

    per_hospital = rows / hospitals
    summary = {
        "hospitals": hospitals,
        "source": source,
        "rows": rows,
        "rows_per_hospital": round(per_hospital, 1),
        "failed_hospitals": len(failed),
        "full_sync_s": round(full_s, 2),
        "full_sync_rows_per_s": round(rows / full_s),
        "baseline_insert_s": round(base_s, 2),
        "baseline_insert_rows_per_s": round(base_rows / base_s),
        "projected_2000_full_sync_s": round(full_s / hospitals * 2000, 1),
        "incremental_changes": changed,
        "incremental_round_s": round(incr_s, 2),
        "list_slots_calls_per_s": round(ours_q["calls_per_s"]),
        "list_slots_p50_ms": round(ours_q["p50_ms"], 2),
        "list_slots_p99_ms": round(ours_q["p99_ms"], 2),
        "raw_select_calls_per_s": round(base_q["calls_per_s"]),
        "raw_select_p99_ms": round(base_q["p99_ms"], 2),
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
    }
    ours_rate, base_rate = rows / full_s, base_rows / base_s
    table = [
        ("figure", "baseline", "read store", "ours/baseline", "target"),
        (f"full sync of {hospitals} hospitals (rows/s)", f"{base_rate:,.0f}",
         f"{ours_rate:,.0f}", f"{ours_rate / base_rate:.2f}x",
         f"2,000 in <= 300 s (projected {summary['projected_2000_full_sync_s']} s)"),
        (f"full sync time ({rows:,} rows)", f"{base_s:.1f} s", f"{full_s:.1f} s",
         f"{full_s / base_s:.2f}x", ""),
        (f"incremental slot round, all changing ({changed:,} changes)", "", f"{incr_s:.1f} s",
         "", "lag p99 <= 10 s"),
        (f"ListSlots calls/s, concurrency {concurrency}", f"{base_q['calls_per_s']:,.0f}",
         f"{ours_q['calls_per_s']:,.0f}", f"{ours_q['calls_per_s'] / base_q['calls_per_s']:.2f}x",
         ">= 3x the tunnel path"),
        ("ListSlots p99 latency", f"{base_q['p99_ms']:.1f} ms", f"{ours_q['p99_ms']:.1f} ms",
         f"{ours_q['p99_ms'] / base_q['p99_ms']:.2f}x", "<= 25 ms"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for i, row in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if failed:
        print(f"! {len(failed)} hospital(s) failed to sync, e.g. {failed[:3]}")
    print(json.dumps(summary))
    return summary
