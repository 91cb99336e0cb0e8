"""``python -m bench.span_store [--quick]``: what the failed-spans index costs and saves.

The node's span table (SQLite, as a node keeps it by default) has a partial index on its
failed spans by hospital (``ix_trace_spans_failed_hospital``) for the dashboard's recent
failures of a hospital. Two stores filled alike, one with the index dropped, measured in
alternating rounds of one run (load on a shared machine hits both alike):

* writes: a batch of 200 spans (5 % failed, hospitals at random), the median per-round
  ratio of write times, indexed / not;
* the hospital page's query (`NodeSpanStore.recent_failures`) at the table's size, the
  median per-round ratio of query times, not indexed / indexed.

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from cloud.db import create_engine
from cloud.traces import NodeSpanStore, migrate_traces
from mesh.observability import SpanRecord

HOSPITALS = 2000


def _batch(n: int, rng: random.Random) -> list[SpanRecord]:
    now = time.time_ns()
    return [
        SpanRecord(
            trace_id=f"{rng.getrandbits(128):032x}",
            span_id=f"{rng.getrandbits(64):016x}",
            parent_span_id="",
            name="hplus.hospital.v1.PatientService/FindPatient",
            kind="client",
            node="n1",
            hospital_id=f"h-{rng.randrange(HOSPITALS):04d}",
            start_ns=now - rng.randrange(10**11),
            duration_ns=1000,
            code=14 if rng.random() < 0.05 else 0,
            message="",
            attributes={},
        )
        for _ in range(n)
    ]


async def _store(path: Path, *, indexed: bool) -> NodeSpanStore:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate_traces(engine)
    if not indexed:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP INDEX ix_trace_spans_failed_hospital"))
    return NodeSpanStore(engine, max_spans=10_000_000, retention=7 * 86400, prune_interval=1e9)


async def run(rows: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-span-store-") as tmp:
        plain = await _store(Path(tmp) / "plain.db", indexed=False)
        indexed = await _store(Path(tmp) / "indexed.db", indexed=True)
        for store in (plain, indexed):
            rng = random.Random(7)  # the same rows in both
            for _ in range(rows // 2000):
                await store.write(_batch(2000, rng))
        rng = random.Random(11)
        writes: list[float] = []
        queries: list[float] = []
        took = {"write_plain": 0.0, "write_indexed": 0.0, "query_plain": 0.0, "query_indexed": 0.0}
        for _ in range(rounds):
            batch = _batch(200, rng)
            hospital = f"h-{rng.randrange(HOSPITALS):04d}"
            times = {}
            for name, store in (("plain", plain), ("indexed", indexed)):
                started = time.perf_counter()
                await store.write(batch)
                times[f"write_{name}"] = time.perf_counter() - started
                started = time.perf_counter()
                await store.recent_failures(hospital)
                times[f"query_{name}"] = time.perf_counter() - started
            for key, value in times.items():
                took[key] += value
            writes.append(times["write_indexed"] / times["write_plain"])
            queries.append(times["query_plain"] / times["query_indexed"])
        for store in (plain, indexed):
            await store._engine.dispose()
    ms = {k: v / rounds * 1000 for k, v in took.items()}
    print(f"span table: {rows} rows, {HOSPITALS} hospitals, {rounds} alternating rounds")
    print(f"{'':28}{'no index':>12}{'indexed':>12}{'ratio':>10}")
    print(
        f"{'write 200 spans (ms)':28}{ms['write_plain']:12.2f}{ms['write_indexed']:12.2f}"
        f"{statistics.median(writes):10.2f}  (indexed / not: the cost)"
    )
    print(
        f"{'recent failures query (ms)':28}{ms['query_plain']:12.2f}{ms['query_indexed']:12.2f}"
        f"{statistics.median(queries):10.1f}  (not / indexed: the saving)"
    )
    print(
        json.dumps(
            {
                "bench": "span_store",
                "rows": rows,
                "write_cost_ratio": round(statistics.median(writes), 3),
                "query_speedup": round(statistics.median(queries), 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.span_store", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50k rows, 10 rounds (< 30 s)")
    args = parser.parse_args()
    asyncio.run(run(rows=50_000 if args.quick else 200_000, rounds=10 if args.quick else 30))


if __name__ == "__main__":
    main()
