"""ListSlots through the patient API (read store) vs through the tunnel (the hospital).

A real node (``hplus cloud run``, dev TLS, SQLite read store) and a fleet-sim process of
N edges dialing it; the node syncs every hospital into its read store first.

- **Patient API**: ``PatientApiService/ListSlots`` on the public endpoint with an app key:
  one doctor, one day (both sessions: 2 x 10 slots), what a patient asks most.
- **Tunnel** (baseline): ``DirectoryService/ListSlots`` of one of those sessions (10 slots)
  on the node's internal endpoint, routed by hospital id through the node's router and
  the hospital's tunnel to its edge, which answers from its in-memory HIS. The baseline
  asks for half the data a patient API call returns, so the ratio favours the tunnel.

Each path gets the same random (hospital, doctor, day) targets; three interleaved rounds,
the median of each figure (the machine is shared). Besides calls/s and latency (which on a
loaded machine measure the machine as much as the path, and include the benchmark
client's own CPU, the same for both paths), the CPU time the node and the fleet processes
spent per call is reported: what each path costs the servers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import statistics
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.type import date_pb2

from bench.stack import Stack, cpu_seconds
from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
from hplus.cloud.v1 import patient_pb2, patient_pb2_grpc
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")  # the fleet's hospitals' zone
DOCTORS = 5
DAYS = 7


def _date(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def _load(
    calls: int,
    concurrency: int,
    call: Callable[[int], Awaitable[object]],
    servers: tuple[int, ...] = (),
) -> dict[str, float]:
    """Runs ``calls`` calls, ``concurrency`` at a time; with ``servers`` (pids), also the
    CPU time those processes spent per call (what the path costs the servers, whatever
    else the machine is doing)."""
    cpu0 = sum(cpu_seconds(pid) for pid in servers)
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
    cpu = sum(cpu_seconds(pid) for pid in servers) - cpu0
    return {
        "server_cpu_ms_per_call": cpu / calls * 1000,
        "calls_per_s": calls / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def run(
    *, hospitals: int, calls: int, concurrency: int, cache_seconds: float | None
) -> dict[str, Any]:
    """Start the stack, run both paths, print the table; returns the JSON summary."""
    toml = "" if cache_seconds is None else f"[patient_api]\nread_cache_seconds = {cache_seconds}\n"
    stack = Stack(hospitals=hospitals, node_toml=toml, fleet_args=("--change-rate", "0"))
    t0 = time.perf_counter()
    try:
        await stack.start()
        print(f"node + {hospitals} edges up in {time.perf_counter() - t0:.1f} s")
        creds = stack.credentials()
        public = grpc.aio.secure_channel(f"localhost:{stack.port}", creds)
        internal = grpc.aio.secure_channel(stack.internal.replace("127.0.0.1", "localhost"), creds)
        async with public, internal:
            api = patient_pb2_grpc.PatientApiServiceStub(public)
            directory = directory_pb2_grpc.DirectoryServiceStub(internal)
            key = (("x-hplus-app-key", stack.app_key),)
            secret = stack.secret
            today = dt.datetime.now(ZONE).date()

            def routed(hospital: str) -> tuple[tuple[str, str], ...]:
                return ((ROUTE_KEY, hospital), (INTERNAL_AUTH_KEY, secret))

            # Wait for the node's first sync of every hospital (read through the API).
            t1 = time.perf_counter()
            pending = set(stack.hospital_ids)
            async with asyncio.timeout(600):
                while pending:
                    for h in sorted(pending):
                        page = await api.ListSlots(
                            patient_pb2.ListSlotsRequest(
                                hospital_id=h, doctor_id=f"D{DOCTORS - 1:04d}",
                                start_date=_date(today + dt.timedelta(days=DAYS - 1)),
                            ),
                            metadata=key, timeout=10,
                        )  # fmt: skip
                        if page.slots:
                            pending.discard(h)
                    if pending:
                        await asyncio.sleep(0.5)  # the node exposes no sync event to a client
            print(f"read store synced in {time.perf_counter() - t1:.1f} s")

            # The sessions of each (hospital, doctor, day), asked of the hospital once.
            sessions: dict[tuple[str, int, dt.date], str] = {}
            for h in stack.hospital_ids:
                for d in range(DOCTORS):
                    reply = await directory.ListSchedules(
                        directory_pb2.ListSchedulesRequest(
                            doctor_id=f"D{d:04d}", start_date=_date(today),
                            end_date=_date(today + dt.timedelta(days=DAYS - 1)), page_size=100,
                        ),
                        metadata=routed(h), timeout=10,
                    )  # fmt: skip
                    for s in reply.schedules:
                        day = dt.date(s.date.year, s.date.month, s.date.day)
                        sessions.setdefault((h, d, day), s.schedule_id)
            rng = random.Random(11)
            targets = [
                (rng.choice(stack.hospital_ids), rng.randrange(DOCTORS), rng.randrange(DAYS))
                for _ in range(calls)
            ]
            targets = [t for t in targets
                       if (t[0], t[1], today + dt.timedelta(days=t[2])) in sessions]  # fmt: skip

            async def ours(i: int) -> object:
                h, d, n = targets[i % len(targets)]
                return await api.ListSlots(
                    patient_pb2.ListSlotsRequest(
                        hospital_id=h, doctor_id=f"D{d:04d}",
                        start_date=_date(today + dt.timedelta(days=n)),
                    ),
                    metadata=key, timeout=30,
                )  # fmt: skip

            async def tunnel(i: int) -> object:
                h, d, n = targets[i % len(targets)]
                return await directory.ListSlots(
                    directory_pb2.ListSlotsRequest(
                        schedule_id=sessions[(h, d, today + dt.timedelta(days=n))]
                    ),
                    metadata=routed(h), timeout=30,
                )  # fmt: skip

            sample_ours = await ours(0)
            sample_tunnel = await tunnel(0)
            ours_slots = len(sample_ours.slots)  # type: ignore[attr-defined]
            tunnel_slots = len(sample_tunnel.slots)  # type: ignore[attr-defined]
            assert ours_slots, "the patient API returned no slots"
            assert tunnel_slots, "the hospital returned no slots"
            await _load(min(calls, 1000), concurrency, tunnel)  # warm both paths
            await _load(min(calls, 1000), concurrency, ours)
            runs: dict[str, list[dict[str, float]]] = {"tunnel": [], "ours": []}
            for _ in range(3):
                servers = (stack.node.pid, stack.fleet.pid)
                runs["tunnel"].append(await _load(calls // 3, concurrency, tunnel, servers))
                runs["ours"].append(await _load(calls // 3, concurrency, ours, servers))
            base, mine = _median(runs["tunnel"]), _median(runs["ours"])
        node_rss = await asyncio.to_thread(_rss, stack.node.pid)
    finally:
        await stack.close()

    ratio = mine["calls_per_s"] / base["calls_per_s"]
    summary = {
        "hospitals": hospitals,
        "calls_per_path": calls // 3 * 3,
        "concurrency": concurrency,
        "cache_seconds": cache_seconds,
        "patient_api_calls_per_s": round(mine["calls_per_s"]),
        "patient_api_p50_ms": round(mine["p50_ms"], 2),
        "patient_api_p99_ms": round(mine["p99_ms"], 2),
        "patient_api_slots_per_call": ours_slots,
        "tunnel_calls_per_s": round(base["calls_per_s"]),
        "tunnel_p50_ms": round(base["p50_ms"], 2),
        "tunnel_p99_ms": round(base["p99_ms"], 2),
        "tunnel_slots_per_call": tunnel_slots,
        "ratio": round(ratio, 2),
        "patient_api_server_cpu_ms_per_call": round(mine["server_cpu_ms_per_call"], 3),
        "tunnel_server_cpu_ms_per_call": round(base["server_cpu_ms_per_call"], 3),
        "server_cpu_ratio": round(
            base["server_cpu_ms_per_call"] / mine["server_cpu_ms_per_call"], 2
        ),
        "node_rss_mib": round(node_rss),
        "cpus": os.cpu_count(),
    }
    table = [
        ("ListSlots, concurrency " + str(concurrency), "tunnel (hospital)", "patient API (store)",
         "ours/tunnel", "target"),
        ("calls/s", f"{base['calls_per_s']:,.0f}", f"{mine['calls_per_s']:,.0f}",
         f"{ratio:.2f}x", ">= 3x"),
        ("p50 latency", f"{base['p50_ms']:.1f} ms", f"{mine['p50_ms']:.1f} ms",
         f"{mine['p50_ms'] / base['p50_ms']:.2f}x", ""),
        ("p99 latency", f"{base['p99_ms']:.1f} ms", f"{mine['p99_ms']:.1f} ms",
         f"{mine['p99_ms'] / base['p99_ms']:.2f}x", "<= 25 ms"),
        ("server CPU per call (node + edge)", f"{base['server_cpu_ms_per_call']:.2f} ms",
         f"{mine['server_cpu_ms_per_call']:.2f} ms",
         f"{base['server_cpu_ms_per_call'] / mine['server_cpu_ms_per_call']:.2f}x fewer", ""),
        ("slots per answer", str(tunnel_slots), str(ours_slots), "", ""),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(json.dumps(summary))
    return summary


def _rss(pid: int) -> float:
    from bench.stack import rss_mib

    return rss_mib(pid)
