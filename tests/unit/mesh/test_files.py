"""mesh.files: private directories and files, created private and tightened when found loose."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from mesh.files import (
    create_private_file,
    ensure_private_file,
    make_private_dir,
    replace_private_file,
    sqlite_files,
    tighten,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def loose_umask():  # type: ignore[no-untyped-def]
    """The usual umask (022), so that only our code can make things private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_make_private_dir_creates_missing_parents_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    target = shared / "edge" / "h-001"
    assert make_private_dir(target) == []
    assert mode(shared / "edge") == 0o700
    assert mode(target) == 0o700
    assert mode(shared) == 0o755  # a parent that existed is not ours to change


def test_make_private_dir_tightens_the_directory_and_named_files_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "data"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    loose = target / "ledger.db"
    loose.write_bytes(b"")
    os.chmod(loose, 0o644)
    private = target / "tasks.db"
    private.write_bytes(b"")
    os.chmod(private, 0o600)
    with caplog.at_level(logging.WARNING, logger="mesh.files"):
        changed = make_private_dir(target, files=[loose, private, target / "absent.db"])
    assert changed == [target, loose]
    assert mode(target) == 0o700
    assert mode(loose) == 0o600
    assert mode(private) == 0o600
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert f"{target} 0755->0700" in lines[0]
    assert f"{loose} 0644->0600" in lines[0]
    # Nothing left to tighten: no line at all.
    caplog.clear()
    assert make_private_dir(target, files=[loose]) == []
    assert caplog.records == []


def test_make_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        make_private_dir(tmp_path / "f")


def test_tighten_keeps_owner_bits(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o775)
    assert tighten([script]) == [script]
    assert mode(script) == 0o700


def test_ensure_private_file_creates_0600_and_leaves_an_existing_file_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    assert ensure_private_file(path) is True
    assert mode(path) == 0o600
    assert path.read_bytes() == b""
    path.write_bytes(b"data")
    os.chmod(path, 0o640)
    assert ensure_private_file(path) is False
    assert path.read_bytes() == b"data"
    assert mode(path) == 0o640


def test_sqlite_companions_take_the_database_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ensure_private_file(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (x)")
    connection.execute("INSERT INTO t VALUES (1)")
    connection.commit()
    present = [p for p in sqlite_files(path) if p.exists()]
    assert [p.name for p in present] == ["store.db", "store.db-wal", "store.db-shm"]
    assert all(mode(p) == 0o600 for p in present)
    connection.close()


def test_create_private_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    create_private_file(path, b"one\n")
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        create_private_file(path, b"two\n")
    assert path.read_bytes() == b"one\n"


def test_replace_private_file_replaces_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old, and readable by all")
    os.chmod(path, 0o644)
    replace_private_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
