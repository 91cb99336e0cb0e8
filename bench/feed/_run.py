"""The change-feed benchmark: a full and an incremental pass against the List* path, per dialect.

Arrangement, per dialect, in one run: the HIS simulator in a child process (as a hospital's
HIS is another machine); a cloud node (dev TLS) and the hospital's edge (``EdgeApp`` with
the example profile pointed at the simulator, its tunnel dialled over TLS to the node) in
this process; the client calls the hospital through the node's router exactly as the cloud
does. Everything crosses the real tunnel.

Measured:

* **cold pass**: a full GetChanges pass started as soon as the tunnel is up, which waits for
  the edge's first read of the HIS into its (empty) mirror;
* **full pass**: a full pass on the warm mirror, at page size 5000 and at the contract's
  default 500 (repeated; the median);
* **HIS refresh** and **incremental pass**: after ten schedules are suspended in the HIS,
  the time of the edge's next read of the HIS into the mirror, then the pass from the last
  watermark;
* **baseline (List*)**: the same directory read with ListDepartments, ListDoctors,
  ListSchedules and one ListSlots per schedule through the same tunnel (what a cloud
  without the feed would do; every call paced by the hospital's ``his.limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from google.type import date_pb2

from cloud.config import NodeConfig
from cloud.node import CloudNode
from frontend_server.adapters import HisError
from frontend_server.app import EdgeApp, EdgeConfig
from frontend_server.dialer import DialerConfig
from frontend_server.profile import load_profile
from frontend_server.services import DirectoryConfig
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "frontend_server" / "profiles"
EXAMPLES = {
    "rest": ("city-first-hospital.toml", 1),
    "soap": ("river-county-hospital.toml", 2),
    "db": ("lakeside-clinic.toml", 3),
}
TARGET_SECONDS = 2.0
REPEATS = 5
TIMEOUT = 120.0


@contextlib.asynccontextmanager
async def _simulator(dialect: str, seed: int, tmp: Path) -> AsyncIterator[tuple[str, str]]:
    """A simulator process; yields (the edge's HIS URL, the admin base URL)."""
    argv = [sys.executable, "-m", "tools.his_sim", "--dialect", dialect, "--seed", str(seed)]
    argv += ["--port", "0"]
    if dialect == "db":
        argv += ["--db-url", f"sqlite+aiosqlite:///{tmp / 'his.sqlite'}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "gen"), str(ROOT)])
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"his_sim {dialect} exited before it was ready")
                found = re.search(r"ready at (\S+)", line)
                if found:
                    break
        url = found.group(1)
        # The database HIS is its SQL URL, with its admin API on its port.
        admin = re.search(r"admin API (\S+)\)", line)
        yield url, admin.group(1) if admin else url
    finally:
        proc.terminate()
        await proc.wait()


def _profile(tmp: Path, dialect: str, url: str) -> Path:
    path = tmp / f"{dialect}.toml"
    path.write_text(
        f'extends = "{(PROFILES / EXAMPLES[dialect][0]).as_posix()}"\n\n'
        f'[[his.endpoints]]\nname = "simulator"\nurl = "{url}"\n',
        encoding="utf-8",
    )
    return path


async def _pass(stub: Any, *, since: str = "", page_size: int = 5000) -> dict[str, Any]:
    started = time.perf_counter()
    token, pages, changes, size = "", 0, 0, 0
    while True:
        page = await stub.GetChanges(
            directory_pb2.GetChangesRequest(since=since, page_token=token, page_size=page_size),
            timeout=TIMEOUT,
        )
        pages += 1
        changes += len(page.changes)
        size += page.ByteSize()
        token = page.next_page_token
        if not token:
            break
    return {
        "pages": pages,
        "changes": changes,
        "bytes": size,
        "seconds": time.perf_counter() - started,
        "snapshot": page.snapshot,
        "watermark": page.watermark,
    }


async def _baseline(
    stub: directory_pb2_grpc.DirectoryServiceStub, today: dt.date
) -> dict[str, Any]:
    started = time.perf_counter()
    calls = size = entities = 0

    async def paged(method: Any, request: Any, field: str) -> list[Any]:
        nonlocal calls, size
        out: list[Any] = []
        while True:
            reply = await method(request, timeout=TIMEOUT)
            calls += 1
            size += reply.ByteSize()
            out.extend(getattr(reply, field))
            if not reply.next_page_token:
                return out
            request.page_token = reply.next_page_token

    deps = await paged(
        stub.ListDepartments,
        directory_pb2.ListDepartmentsRequest(include_unbookable=True, page_size=1000),
        "departments",
    )
    docs = await paged(
        stub.ListDoctors,
        directory_pb2.ListDoctorsRequest(include_unbookable=True, page_size=1000),
        "doctors",
    )
    end = today + dt.timedelta(days=60)
    schedules = await paged(
        stub.ListSchedules,
        directory_pb2.ListSchedulesRequest(
            include_unbookable=True,
            page_size=1000,
            start_date=date_pb2.Date(year=today.year, month=today.month, day=today.day),
            end_date=date_pb2.Date(year=end.year, month=end.month, day=end.day),
        ),
        "schedules",
    )
    slots = 0
    for schedule in schedules:
        slots += len(
            await paged(
                stub.ListSlots,
                directory_pb2.ListSlotsRequest(schedule_id=schedule.schedule_id, page_size=1000),
                "slots",
            )
        )
    entities = len(deps) + len(docs) + len(schedules) + slots
    return {
        "pages": calls,
        "changes": entities,
        "bytes": size,
        "seconds": time.perf_counter() - started,
    }


async def _dialect(dialect: str, tmp: Path, *, baseline: bool) -> dict[str, Any]:
    seed = EXAMPLES[dialect][1]
    async with _simulator(dialect, seed, tmp) as (url, admin):
        config = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=tmp / "cloud",
            node_id="bench",
            grace_seconds=1.0,
        )
        async with CloudNode(config) as node:
            assert node.credentials is not None
            assert node.router is not None
            assert node.tls is not None
            profile = load_profile(_profile(tmp, dialect, url))
            token = (await node.credentials.issue(profile.hospital_id)).token
            edge = EdgeConfig(
                profile=profile,
                data_dir=tmp / "edge",
                dialer=DialerConfig(
                    gateways=(f"localhost:{node.port}",),
                    hospital_id=profile.hospital_id,
                    edge_id="bench-edge",
                    credential=token,
                    ca_cert=node.tls.ca_cert.read_bytes(),
                    backoff_initial=0.05,
                    backoff_max=0.5,
                ),
                # The bench decides when the mirror reads the HIS (no timer, no staleness).
                directory=DirectoryConfig(refresh_seconds=3600, max_staleness_seconds=3600),
            )
            async with EdgeApp(edge) as app:
                assert app.dialer is not None
                await asyncio.wait_for(app.dialer.connected.wait(), 30)
                channel = await node.router.channel_for(profile.hospital_id)
                stub = directory_pb2_grpc.DirectoryServiceStub(channel)
                cold = await _pass(stub)
                full = [await _pass(stub) for _ in range(REPEATS)]
                small = [await _pass(stub, page_size=500) for _ in range(REPEATS)]
                watermark = full[-1]["watermark"]
                today = app.refresher.today()
                schedules = await stub.ListSchedules(
                    directory_pb2.ListSchedulesRequest(page_size=1000), timeout=TIMEOUT
                )
                async with aiohttp.ClientSession() as http:
                    for s in list(schedules.schedules)[::7][:10]:
                        async with http.post(
                            f"{admin}/_admin/schedules/{s.schedule_id}/suspend",
                            json={"reason": "bench"},
                        ) as reply:
                            reply.raise_for_status()
                # The database HIS copies edits into its views on its next cycle, and
                # always before it answers a procedure: one lookup is the barrier.
                with contextlib.suppress(HisError):
                    await app.adapter.get_report("NO-SUCH-REPORT", patient_id="NO-SUCH")
                started = time.perf_counter()
                await app.refresher.refresh()
                refresh_s = time.perf_counter() - started
                incremental = await _pass(stub, since=watermark)
                base = await _baseline(stub, today) if baseline else None
    return {
        "entities": full[-1]["changes"],
        "cold_pass": cold,
        "full_pass": _median(full),
        "full_pass_page500": _median(small),
        "his_refresh_seconds": refresh_s,
        "incremental_pass": incremental,
        "baseline_list": base,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**middle, "seconds_all": [round(r["seconds"], 4) for r in runs]}


def _row(name: str, m: dict[str, Any] | None, base: float | None) -> str:
    if m is None:
        return f"  {name:<34} {'(skipped)':>8}"
    ratio = f"{base / m['seconds']:.0f}x" if base and m["seconds"] > 0 else ""
    return (
        f"  {name:<34} {m['pages']:>6} {m['changes']:>8} {m['bytes'] / 1024:>9.0f} "
        f"{m['seconds']:>9.3f} {ratio:>9}"
    )


def run(*, dialects: list[str], baseline: bool) -> dict[str, Any]:
    """Runs the benchmark; prints the table and the JSON line; returns the figures."""
    results: dict[str, Any] = {}
    for dialect in dialects:
        with tempfile.TemporaryDirectory(prefix=f"bench-feed-{dialect}-") as tmp:
            results[dialect] = asyncio.run(_dialect(dialect, Path(tmp), baseline=baseline))
    print(f"{'':2}{'figure':<34} {'pages':>6} {'entities':>8} {'KiB':>9} {'seconds':>9} "
          f"{'vs List*':>9}")  # fmt: skip
    for dialect, r in results.items():
        base = r["baseline_list"]["seconds"] if r["baseline_list"] else None
        print(f"{dialect} ({r['entities']} entities, 7 days)")
        print(_row("cold pass (incl. first HIS read)", r["cold_pass"], base))
        print(_row("full pass, page 5000 (median)", r["full_pass"], base))
        print(_row("full pass, page 500 (median)", r["full_pass_page500"], base))
        print(f"  {'HIS read into the mirror':<34} {'':>6} {'':>8} {'':>9} "
              f"{r['his_refresh_seconds']:>9.3f}")  # fmt: skip
        print(_row("incremental pass (10 suspended)", r["incremental_pass"], base))
        print(_row("baseline: List* through the tunnel", r["baseline_list"], None))
    worst = max(max(r["cold_pass"]["seconds"], r["full_pass"]["seconds"]) for r in results.values())
    verdict = "met" if worst <= TARGET_SECONDS else "MISSED"
    print(f"target: a full 7-day directory syncs in <= {TARGET_SECONDS} s: {verdict} "
          f"(worst pass {worst:.3f} s)")  # fmt: skip
    for r in results.values():
        for key in ("cold_pass", "incremental_pass"):
            r[key].pop("watermark", None)
        for key in ("full_pass", "full_pass_page500"):
            r[key].pop("watermark", None)
    line = {"bench": "feed", "target_seconds": TARGET_SECONDS, "dialects": results}
    print(json.dumps(line, separators=(",", ":"), default=_round))
    return results


def _round(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    raise TypeError(type(value).__name__)
