"""Files and directories readable by their owner only: where hplus keeps patient data.

The edge's ledger and task queue, the cloud's databases, credentials and secrets live in
files mode 0600 inside directories mode 0700. A file is created with its final mode (never
created open and narrowed afterwards), and a directory or file found with looser modes (an
older release, a restore from backup, a hand-made ``mkdir``) is tightened once, at start,
with one log line.

SQLite creates a database's ``-wal``, ``-shm`` and ``-journal`` files with the mode of the
database file itself, so creating the database file 0600 (:func:`ensure_private_file`)
before SQLite opens it keeps its companions private too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "ensure_private_file",
    "make_private_dir",
    "replace_private_file",
    "sqlite_files",
    "tighten",
]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
"""Mode of a directory holding patient data or secrets."""
PRIVATE_FILE_MODE = 0o600
"""Mode of a file holding patient data or secrets."""

_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sqlite_files(path: Path) -> tuple[Path, ...]:
    """A SQLite database file and the companion files SQLite keeps beside it.

    Args:
        path: the database file.

    Returns:
        ``path`` first, then its ``-wal``, ``-shm`` and ``-journal`` files (which may not
        exist).
    """
    return (path, *(path.with_name(path.name + suffix) for suffix in _SQLITE_COMPANIONS))


def tighten(paths: Iterable[Path]) -> list[Path]:
    """Remove group and other permissions from the paths that exist and have them.

    Logs one line naming every path it changed (none when nothing changed).

    Args:
        paths: files or directories; missing ones are skipped.

    Returns:
        The paths whose mode changed.

    Raises:
        OSError: a mode cannot be read or changed (e.g. the file belongs to another user).
    """
    changed: list[str] = []
    paths_changed: list[Path] = []
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            changed.append(f"{path} {mode:04o}->{mode & 0o700:04o}")
            paths_changed.append(path)
    if changed:
        log.warning("tightened to owner-only (they hold patient data): %s", ", ".join(changed))
    return paths_changed


def make_private_dir(path: Path, *, files: Iterable[Path] = ()) -> list[Path]:
    """Create ``path`` mode 0700 (and any missing parents, also 0700), or tighten it.

    Args:
        path: the directory.
        files: files inside it to tighten as well, when they exist (one log line for all).

    Returns:
        The paths whose mode was tightened (not the ones created).

    Raises:
        OSError: the directory cannot be created or its mode changed.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        # mkdir's mode is filtered by the umask; set it exactly.
        os.chmod(directory, PRIVATE_DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    return tighten([path, *files])


def ensure_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists (an existing file is untouched).

    Used before SQLite opens a database file, so that the file and its companions are
    private from their first byte.

    Returns:
        Whether the file was created now.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def create_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file mode 0600; an existing file is never overwritten.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: it cannot be created or written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600.

    The data goes to a temporary file beside ``path``, synced, then renamed over it, and
    the directory is synced: after a crash the file holds either the old or the new data.

    Raises:
        OSError: the file cannot be written or renamed.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    create_private_file(temporary, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
