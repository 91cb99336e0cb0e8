"""A real PostgreSQL primary with a streaming standby, started by the tests themselves.

``initdb`` a primary (``wal_level = replica``) on a free port, ``pg_basebackup -R`` a copy
of it, start that copy as a hot standby on another free port, with the PostgreSQL binaries
installed on this machine (``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run
as root, so as root every command runs as the ``postgres`` user (``runuser``) in data
directories it owns. Where the binaries are absent the test is skipped with the reason, and
fails instead under CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PgPair", "find_bin", "pg_pair"]


def find_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_basebackup``."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        if (bindir / "pg_basebackup").exists() and (bindir / "pg_ctl").exists():
            with contextlib.suppress(ValueError):
                found.append((int(bindir.parent.name), bindir))
    return max(found)[1] if found else None


def _free_port() -> int:
    # Port 0 picks a free port; PostgreSQL needs the number on its command line, so it is
    # released just before the server binds it (a race no other test here takes part in).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgPair:
    """A primary and its streaming standby, each on its own port.

    Args:
        bindir: the PostgreSQL binaries.
        root: a fresh directory for data and sockets.
    """

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.primary_dir = root / "primary"
        self.standby_dir = root / "standby"
        self.primary_port = _free_port()
        self.standby_port = _free_port()
        self._as_root = os.geteuid() == 0

    def url(self, port: int) -> str:
        """SQLAlchemy URL of the ``postgres`` database on ``port``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    @property
    def primary_url(self) -> str:
        """The primary's URL."""
        return self.url(self.primary_port)

    @property
    def standby_url(self) -> str:
        """The standby's URL."""
        return self.url(self.standby_port)

    def run(self, tool: str, *args: str) -> str:
        """Run a PostgreSQL tool (as ``postgres`` when we are root); its output."""
        argv = [str(self.bindir / tool), *args]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def _start(self, data: Path, port: int) -> None:
        self.run(
            "pg_ctl", "-D", str(data), "-l", str(self.root / f"{data.name}.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1", "start",
        )  # fmt: skip

    def start(self) -> None:
        """Create and start both servers."""
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
                 "--no-sync", "-E", "UTF8")  # fmt: skip
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\n"
            )
        self._start(self.primary_dir, self.primary_port)
        self.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        self.start_standby()

    def start_standby(self) -> None:
        """Start (again) the standby."""
        self._start(self.standby_dir, self.standby_port)

    def stop_standby(self) -> None:
        """Stop the standby at once (connections are cut)."""
        self.run("pg_ctl", "-D", str(self.standby_dir), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop both servers; errors are ignored (a server may be down already)."""
        for data in (self.standby_dir, self.primary_dir):
            if data.exists():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def pg_pair() -> Iterator[PgPair]:
    """A started primary + standby, removed afterwards; skips (fails under CI) without them."""
    bindir = find_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        reason = "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run the replica tests)")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="hplus-pg-"))
    pair = PgPair(bindir, root)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
