"""A store found damaged while the edge runs: DATA_LOSS, logged once, nothing more written."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from frontend_server.ledger import HisOutcome, Ledger, LedgerDamaged
from frontend_server.tasks import TaskStore, TaskStoreDamaged

BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"
PAGE = 4096


def damage(path: Path) -> bytes:
    """Random bytes (seeded: the same every run) over every page but the first (the
    schema); returns the good bytes."""
    good = path.read_bytes()
    assert len(good) > 8 * PAGE, "too small a file to damage pages its reader has not read"
    with path.open("r+b") as f:
        f.seek(PAGE)
        f.write(random.Random(7).randbytes(len(good) - PAGE))
    return good


def damage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reports the file damaged" in r.getMessage()]


async def test_a_damaged_ledger_fails_every_call_with_data_loss_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    async with Ledger.open(path) as ledger:
        for n in range(200):
            await ledger.begin(f"k-{n}", method=BOOK, fingerprint="f")
            await ledger.succeed(f"k-{n}", HisOutcome(receipt=f"R{n}", result=os.urandom(400)))
    ledger = Ledger.open(path)  # a fresh connection: nothing of the table is cached
    await ledger.start()
    try:
        assert ledger.damage is None
        good = damage(path)
        damaged = path.read_bytes()
        with caplog.at_level(logging.ERROR), pytest.raises(LedgerDamaged) as info:
            await ledger.get("k-150")
        assert info.value.code == "DATA_LOSS"
        assert info.value.reason == "LEDGER_DAMAGED"
        assert ledger.damage is not None
        assert str(path) in ledger.damage
        # Every later call is refused, even one SQLite could still answer from its cache,
        # and even a write of a new key: nothing more goes into a damaged file.
        path.write_bytes(good)
        with caplog.at_level(logging.ERROR):
            with pytest.raises(LedgerDamaged):
                await ledger.get("k-150")
            with pytest.raises(LedgerDamaged):
                await ledger.begin("new", method=BOOK, fingerprint="f")
        assert len(damage_lines(caplog)) == 1
        assert path.read_bytes() == good
        assert damaged != good
    finally:
        await ledger.aclose()


async def test_a_damaged_task_store_fails_its_calls_with_data_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tasks.db"
    async with TaskStore.open(path) as store:
        for n in range(100):
            await store.submit(
                idempotency_key=f"t-{n}",
                kind="retrieve_archived_report",
                payload=os.urandom(600),
                priority=0,
                max_attempts=3,
                deadline=4e9,
                queue_limit=1000,
            )
    store = TaskStore.open(path)
    await store.start()
    try:
        damage(path)
        with caplog.at_level(logging.ERROR):
            with pytest.raises(TaskStoreDamaged) as info:
                await store.get_by_key("t-90")
            with pytest.raises(TaskStoreDamaged):
                await store.stats(drain_rate_per_second=1.0)
        assert info.value.code == "DATA_LOSS"
        assert store.damage is not None
        assert len(damage_lines(caplog)) == 1
    finally:
        await store.aclose()
