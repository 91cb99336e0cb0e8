"""The store-check benchmark: the edge's stores opened without and with the start checks.

The ledger is filled with rows shaped like real ones (a BookAppointment key, method,
fingerprint, receipt and a 400-byte response; one in ten a recorded refusal) through
``sqlite3`` in one transaction, because a million synchronous commits through the ledger
would only measure the disk. The file is then adopted and stamped by ``DataDir.open``, as
an edge upgrading to this release does. Every variant runs on a warm page cache (the
machine's other work shares the disk; dropping caches needs root): the cold cost adds one
sequential read of the file, whose size is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from frontend_server.app import DataDir, StoreSlot
from frontend_server.ledger import LEDGER_STORE, Ledger
from frontend_server.tasks import TASK_STORE, TaskStore

_BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"
_REFUSAL = json.dumps(
    {
        "code": "RESOURCE_EXHAUSTED",
        "message": "no place is free in this slot",
        "reason": "SLOT_FULL",
    }
)


def _data_dir(path: Path) -> DataDir:
    return DataDir(
        path,
        hospital_id="bench",
        stores=[StoreSlot(LEDGER_STORE, "ledger.db"), StoreSlot(TASK_STORE, "tasks.db")],
    )


async def _open_stores(path: Path) -> None:
    """What the edge's start did before the checks: both stores, schema, recovery."""
    ledger = Ledger.open(path / "ledger.db")
    store = TaskStore.open(path / "tasks.db")
    try:
        await ledger.start()
        await store.start()
    finally:
        await store.aclose()
        await ledger.aclose()


def _build(path: Path, entries: int) -> None:
    path.mkdir()
    asyncio.run(_open_stores(path))  # the schema, as the ledger makes it
    now = time.time()
    rows = []
    for n in range(entries):
        refused = n % 10 == 0
        rows.append(
            (
                f"cloud-{n:09d}-{os.urandom(6).hex()}",
                _BOOK,
                os.urandom(32).hex(),
                "FAILED" if refused else "SUCCEEDED",
                now,
                now,
                now,
                1,
                os.urandom(16).hex(),
                None if refused else f"GH{n:012d}",
                None if refused else os.urandom(400),
                _REFUSAL if refused else None,
            )
        )
    with contextlib.closing(sqlite3.connect(path / "ledger.db")) as connection:
        connection.executemany(
            "INSERT INTO operations (idempotency_key, method, fingerprint, state, receive_time, "
            "update_time, complete_time, his_attempts, trace_id, receipt, result, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _data_dir(path).open()  # adopt and stamp: from now on the checks find a stamped store


def _pragma(path: Path, pragma: str) -> None:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        (result,) = connection.execute(f"PRAGMA {pragma}").fetchone()
    if result != "ok":
        raise RuntimeError(f"{pragma}: {result}")


def _timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000.0


def run(*, entries: int, repeat: int) -> dict[str, object]:
    """Build the stores, time each variant ``repeat`` times interleaved, print the table."""
    with tempfile.TemporaryDirectory(prefix="hplus-bench-stores-") as tmp:
        path = Path(tmp) / "edge"
        t0 = time.perf_counter()
        _build(path, entries)
        build_s = time.perf_counter() - t0
        size_mb = (path / "ledger.db").stat().st_size / 1e6
        data = _data_dir(path)

        def checked() -> None:
            data.open()
            asyncio.run(_open_stores(path))

        variants: dict[str, Callable[[], None]] = {
            "before": lambda: asyncio.run(_open_stores(path)),
            "checked": checked,
            "integrity_check": lambda: _pragma(path / "ledger.db", "integrity_check"),
            "quick_check": lambda: _pragma(path / "ledger.db", "quick_check"),
            "clean_stop": lambda: data.record_clean_stop(),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for step in variants.values():  # one warm-up each
            step()
        for _ in range(repeat):
            for name, step in variants.items():
                times[name].append(_timed(step))
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        ("stores opened as before the checks", median["before"], 1.0),
        ("with the start checks (DataDir.open + the same)", median["checked"], None),
        ("  of which PRAGMA integrity_check, ledger.db", median["integrity_check"], None),
        ("PRAGMA quick_check, ledger.db (for comparison)", median["quick_check"], None),
        ("clean stop: entry counts into the record", median["clean_stop"], None),
    ]
    print(
        f"ledger: {entries:,} entries, {size_mb:.1f} MB (built in {build_s:.1f} s); "
        f"median of {repeat} interleaved runs, warm page cache"
    )
    print(f"{'step':<52} {'ms':>9} {'/ before':>9}")
    for label, ms, _ in rows:
        print(f"{label:<52} {ms:>9.1f} {ms / median['before']:>8.2f}x")
    added = median["checked"] - median["before"]
    print(f"added to the edge's start by the checks: {added:.0f} ms")
    summary: dict[str, object] = {
        "entries": entries,
        "ledger_mb": round(size_mb, 1),
        "repeat": repeat,
        **{f"{name}_ms": round(value, 1) for name, value in median.items()},
        "checked_over_before": round(median["checked"] / median["before"], 2),
        "added_ms": round(added, 1),
    }
    print(json.dumps(summary, sort_keys=True))
    return summary
