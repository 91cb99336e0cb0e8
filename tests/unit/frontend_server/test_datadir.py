"""The edge's data directory: stores checked at start against the identity record.

Real SQLite files, made by the real Ledger and TaskStore; each damage is done to the
bytes on disk as a disk, an operator or a bad restore would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from frontend_server.app import IDENTITY_FILE, DataDir, StoreRefused, StoreSlot
from frontend_server.ledger import LEDGER_STORE, HisOutcome, Ledger
from frontend_server.tasks import TASK_STORE, TaskStore

HOSPITAL = "h-001"
BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"
NOW = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)


def data_dir(path: Path, hospital: str = HOSPITAL) -> DataDir:
    return DataDir(
        path,
        hospital_id=hospital,
        stores=[StoreSlot(LEDGER_STORE, "ledger.db"), StoreSlot(TASK_STORE, "tasks.db")],
        clock=lambda: NOW,
    )


async def _fill(path: Path, entries: int) -> None:
    async with Ledger.open(path / "ledger.db") as ledger:
        for n in range(entries):
            await ledger.begin(f"k-{n}", method=BOOK, fingerprint="f")
            await ledger.succeed(f"k-{n}", HisOutcome(receipt=f"R{n}", result=b"x" * 200))
    async with TaskStore.open(path / "tasks.db"):
        pass


def populated(path: Path, entries: int = 3) -> DataDir:
    """A data directory as an edge leaves it: opened, written, stopped cleanly."""
    data = data_dir(path)
    data.open()
    asyncio.run(_fill(path, entries))
    data.record_clean_stop()
    return data


def snapshot(path: Path) -> dict[str, bytes]:
    # -shm is SQLite's shared-memory index, which every reader updates: not content.
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if not p.name.endswith("-shm")}


def refusal(path: Path, **kwargs: object) -> StoreRefused:
    before = snapshot(path)
    with pytest.raises(StoreRefused) as info:
        data_dir(path, **kwargs).open()  # type: ignore[arg-type]
    # A refusal changes nothing: the evidence stays as it was found.
    assert snapshot(path) == before
    assert "\n" not in str(info.value)
    return info.value


def record(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / IDENTITY_FILE).read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def sql(path: Path, statement: str) -> tuple[object, ...] | None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        row: tuple[object, ...] | None = connection.execute(statement).fetchone()
        return row


def test_a_new_directory_gets_private_stamped_stores_and_a_record(tmp_path: Path) -> None:
    edge = tmp_path / "var" / "edge" / HOSPITAL
    populated(edge)
    assert mode(edge) == 0o700
    assert mode(edge / IDENTITY_FILE) == 0o600
    for name in ("ledger.db", "tasks.db"):
        assert mode(edge / name) == 0o600
    saved = record(edge)
    assert saved["hospital_id"] == HOSPITAL
    assert saved["last_clean_stop"] == "2026-03-01T08:30:00Z"
    assert saved["stores"]["ledger"]["entries_at_last_clean_stop"] == 3
    assert saved["stores"]["tasks"]["entries_at_last_clean_stop"] == 0
    stamp = sql(edge / "ledger.db", "SELECT store_id FROM hplus_store")
    assert stamp == (saved["stores"]["ledger"]["store_id"],)
    assert sql(edge / "ledger.db", "PRAGMA user_version") == (LEDGER_STORE.schema_version,)
    # And it opens again as it is.
    data_dir(edge).open()


def test_an_emptied_ledger_is_refused_naming_the_file_and_its_history(tmp_path: Path) -> None:
    populated(tmp_path)
    (tmp_path / "ledger.db").write_bytes(b"")
    err = refusal(tmp_path)
    assert str(err) == (
        f"{tmp_path / 'ledger.db'}: the ledger is empty but this data directory had one "
        "(created 2026-03-01 08:30:00 UTC, 3 entries at the last clean stop on 2026-03-01 "
        "08:30:00 UTC): restore it from backup, or reset it to archive it and begin a new one"
    )
    assert err.store == "ledger"


def test_a_deleted_ledger_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    for path in tmp_path.glob("ledger.db*"):
        path.unlink()
    err = refusal(tmp_path)
    assert "the ledger is missing but this data directory had one" in err.problem


def test_random_bytes_over_a_page_are_found_by_the_integrity_check(tmp_path: Path) -> None:
    populated(tmp_path, entries=40)
    with (tmp_path / "ledger.db").open("r+b") as f:
        f.seek(4096)
        f.write(random.Random(3).randbytes(4096))
    err = refusal(tmp_path)
    assert err.problem.startswith("the ledger is damaged (")
    assert err.store == "ledger"


def test_a_damaged_header_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    with (tmp_path / "tasks.db").open("r+b") as f:
        f.write(b"garbage!" * 8)
    err = refusal(tmp_path)
    assert err.path == tmp_path / "tasks.db"
    assert err.problem == "the task store is damaged (its header is not SQLite's)"
    assert err.store == "tasks"


def test_a_ledger_from_another_data_directory_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    populated(ours)
    populated(theirs)
    shutil.copyfile(theirs / "ledger.db", ours / "ledger.db")
    err = refusal(ours)
    assert err.problem.startswith("the ledger is another data directory's")


def test_a_ledger_of_another_hospital_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    populated(ours)
    data_dir(theirs, hospital="h-002").open()
    shutil.copyfile(theirs / "ledger.db", ours / "ledger.db")
    err = refusal(ours)
    assert err.problem.startswith("the ledger belongs to hospital h-002")


def test_the_task_store_in_the_ledgers_place_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    shutil.copyfile(tmp_path / "tasks.db", tmp_path / "ledger.db")
    err = refusal(tmp_path)
    assert err.problem == "this is not the ledger: it is the task store"


def test_a_store_written_by_a_newer_schema_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    sql(tmp_path / "ledger.db", "PRAGMA user_version = 7")
    err = refusal(tmp_path)
    assert err.problem == (
        "the ledger was written by a newer release of hplus (schema 7; this one knows up to 1)"
    )
    assert err.remedy == "run the release that wrote it"


def test_a_directory_of_another_hospital_is_refused_without_a_reset(tmp_path: Path) -> None:
    populated(tmp_path)
    err = refusal(tmp_path, hospital="h-002")
    assert err.store is None
    assert str(err).startswith(f"{tmp_path}: this data directory belongs to hospital h-001")


def test_a_damaged_identity_record_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    (tmp_path / IDENTITY_FILE).write_text("{")
    err = refusal(tmp_path)
    assert err.path == tmp_path / IDENTITY_FILE
    assert err.store is None


def test_a_lost_record_is_recreated_from_the_stamps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = record(populated(tmp_path).path)
    (tmp_path / IDENTITY_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        data_dir(tmp_path).open()
    again = record(tmp_path)
    assert again["data_dir_id"] == first["data_dir_id"]
    assert again["stores"]["ledger"]["store_id"] == first["stores"]["ledger"]["store_id"]
    assert any("re-created from the stores' stamps" in r.getMessage() for r in caplog.records)


def test_a_lost_record_and_an_emptied_ledger_are_still_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    (tmp_path / IDENTITY_FILE).unlink()
    (tmp_path / "ledger.db").write_bytes(b"")
    err = refusal(tmp_path)
    assert err.problem.startswith(
        "the ledger is empty but tasks.db shows this data directory had one"
    )


def test_reset_archives_the_damaged_store_and_begins_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    populated(tmp_path)
    damaged = b"garbage!" * 8 + (tmp_path / "ledger.db").read_bytes()[64:]
    (tmp_path / "ledger.db").write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        data_dir(tmp_path).open(reset={"ledger", "tasks"})
    archive = tmp_path / "ledger-archived-20260301T083000Z.db"
    assert archive.read_bytes() == damaged  # kept byte for byte, never deleted
    assert mode(archive) == 0o600
    (line,) = [r.getMessage() for r in caplog.records if "reset as asked" in r.getMessage()]
    assert "ledger-archived-20260301T083000Z.db" in line
    saved = record(tmp_path)
    assert saved["archived"][0]["store"] == "ledger"
    assert saved["archived"][0]["files"][0] == archive.name
    # The healthy task store was kept although its reset was asked for too.
    assert len(saved["archived"]) == 1
    asyncio.run(_fill(tmp_path, 1))
    data_dir(tmp_path).open()  # the new ledger is this directory's


def test_a_store_from_before_stamps_is_adopted_with_its_entries(tmp_path: Path) -> None:
    # What the previous release left: the stores, no stamp, no identity record.
    tmp_path.chmod(0o755)
    asyncio.run(_fill(tmp_path, 5))
    for name in ("ledger.db", "tasks.db"):
        (tmp_path / name).chmod(0o644)
    data_dir(tmp_path).open()
    assert mode(tmp_path) == 0o700
    assert mode(tmp_path / "ledger.db") == 0o600
    assert sql(tmp_path / "ledger.db", "SELECT count(*) FROM operations") == (5,)
    assert sql(tmp_path / "ledger.db", "PRAGMA user_version") == (1,)
    assert record(tmp_path)["stores"]["ledger"]["store_id"]
