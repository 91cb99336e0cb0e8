"""A node syncing N fleet-sim hospitals into PostgreSQL: full sync, incremental lag, RSS.

1. **Full sync.** The node starts with the fleet's master data imported and an empty read
   store; the fleet's edges dial in (in waves of 100, as the simulator does); the node
   syncs every hospital it holds a tunnel for (bounded concurrency). Measured from the
   moment the fleet starts dialing to the moment every hospital has completed a pass of
   every kind, read from the store's own sync state; rows/s over the rows then stored.
2. **Incremental lag.** With every hospital changing (``--change-rate`` per hospital per
   second), after ``--settle`` seconds (the backlog of the full sync drains), every 2 s
   for ``--observe`` seconds the age of each hospital's slots in the
   store (now minus the ``data_time`` of its last slot pass: a change made at the
   hospital is in the store within that age) is sampled; p50/p99/max over all samples.
3. **RSS.** The node's resident set size, sampled during (2): N tunnels and the sync
   running. The fleet process's RSS is reported by the simulator itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import statistics
import time
from typing import Any

import sqlalchemy as sa

from bench.stack import Stack, rss_mib
from cloud.readstore import ReadStore
from hplus.hospital.v1 import directory_pb2
from tools.scratchdb import DEFAULT_POSTGRES, postgres_databases

DEFAULT_URL = DEFAULT_POSTGRES
_SLOT = directory_pb2.ENTITY_KIND_SLOT


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * p) - 1)] if ordered else float("nan")


async def run(
    *,
    hospitals: int,
    observe: float,
    settle: float,
    change_rate: float,
    slot_interval: float,
    url: str,
) -> dict[str, Any]:
    """Run the three measurements and print the table; returns the JSON summary."""
    async with postgres_databases(url, ("readstore",), prefix="bench_fleet") as made:
        store_url = made["readstore"]
        toml = (
            f'[databases]\nreadstore = "{store_url}"\n\n'
            f"[sync]\nslot_interval = {slot_interval}\ndirectory_interval = 60.0\n"
        )
        stack = Stack(
            hospitals=hospitals, node_toml=toml, fleet_args=("--change-rate", str(change_rate))
        )
        store: ReadStore | None = None
        try:
            t0 = time.perf_counter()
            await stack.start()
            connected = time.perf_counter()
            store = await ReadStore.open(store_url)
            ids = set(stack.hospital_ids)
            async with asyncio.timeout(1800):
                while True:
                    states = await store.status()
                    done = {s.hospital_id for s in states if s.last_success is not None} & ids
                    if len(done) == len(ids):
                        break
                    await asyncio.sleep(1.0)  # the store exposes no event to another process
            full_s = time.perf_counter() - stack.fleet_started
            async with store.primary.connect() as conn:
                rows = 0
                for name_ in ("rs_departments", "rs_doctors", "rs_schedules", "rs_slots"):
                    rows += (
                        await conn.execute(sa.text(f"SELECT count(*) FROM {name_}"))
                    ).scalar_one()
            print(f"full sync of {hospitals} hospitals: {full_s:.1f} s, {rows:,} rows")

            # Settle: the hospitals synced first waited for the last snapshots before their
            # first incremental pass; their backlog is the full sync's, not the steady lag.
            await asyncio.sleep(settle)  # a measurement window, not a synchronisation
            lags: list[float] = []
            rss: list[float] = []
            end = time.monotonic() + observe
            while time.monotonic() < end:
                now = dt.datetime.now(dt.UTC)
                for s in await store.status():
                    kind = s.kinds.get(_SLOT)
                    if kind is not None and kind.data_time is not None:
                        lags.append((now - kind.data_time).total_seconds())
                rss.append(rss_mib(stack.node.pid))
                await asyncio.sleep(2.0)  # a sampling period, not a synchronisation
            fleet_line = next((x for x in stack.fleet.lines if "ready:" in x), "")
        finally:
            if store is not None:
                await store.close()
            await stack.close()

    summary = {
        "hospitals": hospitals,
        "rows": rows,
        "fleet_connect_s": round(stack.fleet_ready_s, 1),
        "full_sync_s": round(full_s, 1),
        "full_sync_rows_per_s": round(rows / full_s),
        "stack_start_s": round(connected - t0, 1),
        "change_rate_per_hospital": change_rate,
        "slot_interval_s": slot_interval,
        "settle_s": settle,
        "observe_s": observe,
        "lag_p50_s": round(statistics.median(lags), 2),
        "lag_p99_s": round(_pct(lags, 0.99), 2),
        "lag_max_s": round(max(lags), 2),
        "node_rss_mib_max": round(max(rss)),
        "cpus": os.cpu_count(),
    }
    table = [
        ("figure", "measured", "goal"),
        (f"full sync of {hospitals} hospitals (dial-in to all synced)",
         f"{full_s:.1f} s", "2,000 in <= 300 s"),
        ("rows stored / rows per second", f"{rows:,} / {rows / full_s:,.0f}", ""),
        (f"incremental lag p50 / p99 / max (slot_interval {slot_interval:g} s)",
         f"{summary['lag_p50_s']} / {summary['lag_p99_s']} / {summary['lag_max_s']} s",
         "p99 <= 10 s"),
        (f"node RSS with {hospitals} tunnels, sync running", f"{max(rss):.0f} MiB", "report"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if fleet_line:
        print(fleet_line)
    print(json.dumps(summary))
    return summary
