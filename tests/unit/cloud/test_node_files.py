"""The cloud node's data directory and SQLite files are private: 0700 and 0600."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from cloud.config import NodeConfig
from cloud.node import CloudNode


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def config(data_dir: Path) -> NodeConfig:
    return NodeConfig(
        listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=data_dir, node_id="t1"
    )


@pytest.fixture(autouse=True)
def usual_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def sqlite_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if ".db" in p.name)


async def test_a_new_node_makes_its_data_directory_and_databases_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "cloud"
    async with CloudNode(config(data_dir)):
        assert mode(data_dir) == 0o700
        assert {"fleet.db", "registry.db"} <= {p.name for p in sqlite_files(data_dir)}
        for path in sqlite_files(data_dir):  # with their journals, while the node runs
            assert mode(path) == 0o600, path
    assert mode(data_dir / "cluster-secret") == 0o600


async def test_looser_modes_left_by_an_older_node_are_tightened_in_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with CloudNode(config(tmp_path / "var")):
        pass
    os.chmod(tmp_path / "var", 0o755)
    for path in sqlite_files(tmp_path / "var"):
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="mesh.files"):
        async with CloudNode(config(tmp_path / "var")):
            pass
    assert mode(tmp_path / "var") == 0o700
    assert all(mode(p) == 0o600 for p in sqlite_files(tmp_path / "var"))
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"{tmp_path / 'var'} 0755->0700" in line for line in lines)
    assert any(f"{tmp_path / 'var' / 'fleet.db'} 0644->0600" in line for line in lines)
    assert any(f"{tmp_path / 'var' / 'registry.db'} 0644->0600" in line for line in lines)
