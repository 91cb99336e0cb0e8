"""The edge's local SQLite stores: one engine per file, set up for durability, and checked.

The ledger and the task queue each keep a SQLite file. Both must survive the process being
killed at any instant, so every commit is synchronous (``synchronous=FULL``) in WAL mode,
and writers wait for each other (``busy_timeout``) instead of failing.

They are the edge's evidence, so a damaged file is never used silently:

* at start, :func:`inspect_store` reads a store file with the standard library's
  ``sqlite3`` (before any engine touches it) and says what it is: missing, empty, not a
  SQLite file, damaged (``PRAGMA integrity_check``), another kind of store, written by a
  newer schema, or one of ours with its stamp (:class:`StoreStamp`, kept in the file's
  ``hplus_store`` table; the schema version is the file's ``user_version`` and its kind
  the ``application_id``);
* at run time, an engine made with a :class:`StoreHealth` turns SQLite's "database disk
  image is malformed" into the store's own DATA_LOSS error, logs it once, and from then on
  refuses every statement on that file: nothing more is written into a damaged store.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

from mesh.files import ensure_private_file

__all__ = [
    "FileState",
    "StoreFile",
    "StoreHealth",
    "StoreKind",
    "StoreStamp",
    "count_entries",
    "inspect_store",
    "is_corruption",
    "sqlite_engine",
    "stamp_store",
]

log = logging.getLogger(__name__)

_HEADER = b"SQLite format 3\x00"
_STAMP_TABLE = "hplus_store"
# Result codes whose primary part (low byte) means the file itself is bad.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def is_corruption(err: BaseException) -> bool:
    """Whether ``err`` is SQLite saying the database file is damaged or not a database."""
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


class StoreHealth:
    """Whether a store's file has been found damaged while the edge runs.

    Args:
        path: the store's file (named in the log line and the detail).
        error: builds the exception a call gets once the file is damaged (the store's own
            DATA_LOSS error), from a short description.
    """

    def __init__(self, path: Path, error: Callable[[str], Exception]) -> None:
        self.path = path
        self._error = error
        self.damage: str | None = None
        """What was found, once the file is known to be damaged; ``None`` while healthy."""

    def mark(self, cause: BaseException) -> None:
        """Record that the file is damaged (logged once, at the first discovery)."""
        if self.damage is None:
            self.damage = f"{self.path} is damaged ({cause})"
            log.error(
                "%s: SQLite reports the file damaged (%s): refusing every further call on "
                "it; stop the edge and restore the file from backup",
                self.path,
                cause,
            )

    def error(self) -> Exception:
        """The exception a call on the damaged store fails with."""
        assert self.damage is not None
        return self._error(self.damage)


def sqlite_engine(path: Path | str, *, health: StoreHealth | None = None) -> AsyncEngine:
    """An async engine on the SQLite file ``path`` (``":memory:"`` for a private database).

    One pooled connection: SQLite serialises writers anyway, and a single connection means
    the coroutines of one process queue for it instead of contending for the file lock.

    Args:
        path: the database file; created mode 0600 at the first connection if missing, so
            SQLite's ``-wal`` and ``-shm`` files (which take the database file's mode) are
            private too.
        health: when given, SQLite reporting the file damaged marks it, and that call and
            every later one fail with ``health.error()``.
    """
    memory = str(path) == ":memory:"
    if memory:
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    else:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{Path(path)}",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
        )

    if not memory:

        @event.listens_for(engine.sync_engine, "do_connect")
        def _create_private(*_args: Any) -> None:
            # At the first connection, not here: the edge inspects its store files before
            # anything creates them (a missing ledger must not become an empty one).
            ensure_private_file(Path(path))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if health is not None:

        @event.listens_for(engine.sync_engine, "handle_error")
        def _on_error(context: ExceptionContext) -> None:
            if is_corruption(context.original_exception):
                health.mark(context.original_exception)
                raise health.error() from context.original_exception

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _refuse_when_damaged(*_args: Any) -> None:
            if health.damage is not None:
                raise health.error()

    return engine


# -- start-time checks -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreKind:
    """What a kind of store (the ledger, the task store) looks like on disk."""

    name: str
    """Short name: ``"ledger"``, ``"tasks"``."""
    title: str
    """How messages name it: ``"the ledger"``."""
    application_id: int
    """SQLite ``application_id`` marking a file as this kind of store."""
    schema_version: int
    """The newest schema this release writes (the file's ``user_version``)."""
    tables: frozenset[str]
    """The tables of its schema (an unstamped file with them is an older store of this
    kind; one without them is some other database)."""
    entries_table: str
    """The table whose rows are counted as entries (in the identity record)."""
    upgrades: Mapping[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """SQL taking a store from schema version N (the key) to N + 1. Version 0 (files
    written before stores were stamped) goes to 1 by stamping alone."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreStamp:
    """Who a store file belongs to, written inside it (and in the edge's identity record)."""

    store_id: str
    """Random id given to the store when it was created."""
    data_dir_id: str
    """The id of the data directory it was created in."""
    hospital_id: str
    """The hospital whose edge created it."""
    created_at: str
    """When it was created (ISO 8601, UTC)."""


class FileState(enum.Enum):
    """What :func:`inspect_store` found."""

    MISSING = "missing"
    EMPTY = "empty"
    NOT_SQLITE = "not a SQLite file"
    DAMAGED = "damaged"
    FOREIGN = "another kind of file"
    NEWER = "written by a newer schema"
    UNSTAMPED = "a store from before stamps"
    STAMPED = "a stamped store"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreFile:
    """One store file as found at start."""

    path: Path
    """The file."""
    state: FileState
    """What it is."""
    detail: str = ""
    """For DAMAGED, NOT_SQLITE and FOREIGN: what SQLite or the check said."""
    schema_version: int = 0
    """The file's ``user_version``."""
    stamp: StoreStamp | None = None
    """For STAMPED: its stamp."""


def _connect(path: Path, *, write: bool = False) -> sqlite3.Connection:
    # Never create the file here. Read-only, a connection also leaves a WAL left by a
    # crash as it is (closing a writable one would checkpoint it into a file that may be
    # damaged, before anyone could archive it); without a WAL to read, ``immutable``
    # keeps SQLite from creating -wal and -shm files: inspecting changes nothing.
    if write:
        query = "mode=rw"
    else:
        wal = path.with_name(path.name + "-wal")
        has_wal = wal.exists() and wal.stat().st_size > 0
        query = "mode=ro" if has_wal else "mode=ro&immutable=1"
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?{query}", uri=True, isolation_level=None, timeout=10.0
    )


def inspect_store(path: Path, kind: StoreKind, *, known: Sequence[StoreKind] = ()) -> StoreFile:
    """Read a store file and say what it is, without changing it.

    Runs ``PRAGMA integrity_check``, which reads every page and checks every index
    against its table. ``quick_check`` skips the index check, but the ledger finds a key
    through its primary-key index: an index that lost an entry would make a known key
    look new and its write run again. On a 100,000-entry ledger (75 MB) integrity_check
    takes about 0.2 s (``python -m bench.stores``).

    Args:
        path: the file.
        kind: the kind of store expected there.
        known: other kinds of store, named when one of them is found in ``kind``'s place.

    Raises:
        sqlite3.Error: the file cannot be read for another reason than damage (e.g. it is
            locked or unreadable); the caller reports it.
    """
    if not path.exists():
        return StoreFile(path=path, state=FileState.MISSING)
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size
    if size == 0 and (not wal.exists() or wal.stat().st_size == 0):
        return StoreFile(path=path, state=FileState.EMPTY)
    if size:
        with path.open("rb") as f:
            if f.read(len(_HEADER)) != _HEADER:
                return StoreFile(
                    path=path, state=FileState.NOT_SQLITE, detail="its header is not SQLite's"
                )
    connection = _connect(path)
    try:
        return _inspect(connection, path, kind, known)
    except sqlite3.DatabaseError as err:
        if not is_corruption(err):
            raise
        state = FileState.NOT_SQLITE if err.sqlite_errorcode == _SQLITE_NOTADB else None
        return StoreFile(path=path, state=state or FileState.DAMAGED, detail=str(err))
    finally:
        connection.close()


def _inspect(
    connection: sqlite3.Connection, path: Path, kind: StoreKind, known: Sequence[StoreKind]
) -> StoreFile:
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if not tables and application_id == 0 and version == 0:
        return StoreFile(path=path, state=FileState.EMPTY)
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check(1)")]
    if problems != ["ok"]:
        # One line for the refusal: SQLite's report spans lines and names the schema.
        text = " ".join(" ".join(problems).replace("*** in database main ***", "").split())
        return StoreFile(path=path, state=FileState.DAMAGED, detail=text[:300])
    if application_id != kind.application_id and (application_id != 0 or not kind.tables <= tables):
        return StoreFile(
            path=path, state=FileState.FOREIGN, detail=_foreign(application_id, tables, known)
        )
    if version > kind.schema_version:
        return StoreFile(path=path, state=FileState.NEWER, schema_version=version)
    if _STAMP_TABLE not in tables:
        return StoreFile(path=path, state=FileState.UNSTAMPED, schema_version=version)
    row = connection.execute(
        f"SELECT store_id, data_dir_id, hospital_id, created_at FROM {_STAMP_TABLE}"
    ).fetchone()
    if row is None:
        return StoreFile(path=path, state=FileState.UNSTAMPED, schema_version=version)
    stamp = StoreStamp(store_id=row[0], data_dir_id=row[1], hospital_id=row[2], created_at=row[3])
    return StoreFile(path=path, state=FileState.STAMPED, schema_version=version, stamp=stamp)


def _foreign(application_id: int, tables: set[str], known: Sequence[StoreKind]) -> str:
    for other in known:
        if other.application_id == application_id or (
            application_id == 0 and other.tables <= tables
        ):
            return f"it is {other.title}"
    return f"it holds other tables ({', '.join(sorted(tables)) or 'none'})"


def stamp_store(
    path: Path, kind: StoreKind, stamp: StoreStamp | None, *, from_version: int
) -> None:
    """Bring a store file to ``kind.schema_version`` and write its stamp (one transaction).

    Creates the file mode 0600 if it is missing. An older store is migrated forward by
    ``kind.upgrades``; ``stamp`` is written when given (a new or unstamped store).

    Args:
        path: the file.
        kind: its kind.
        stamp: the stamp to write, or ``None`` to keep the one it has.
        from_version: its schema version now (0 for a new or unstamped file).
    """
    ensure_private_file(path)
    connection = _connect(path, write=True)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for version in range(from_version, kind.schema_version):
            for statement in kind.upgrades.get(version, ()):
                connection.execute(statement)
        if stamp is not None:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_STAMP_TABLE} (store_id TEXT NOT NULL, "
                "data_dir_id TEXT NOT NULL, hospital_id TEXT NOT NULL, created_at TEXT NOT NULL)"
            )
            connection.execute(f"DELETE FROM {_STAMP_TABLE}")
            connection.execute(
                f"INSERT INTO {_STAMP_TABLE} VALUES (?, ?, ?, ?)",
                (stamp.store_id, stamp.data_dir_id, stamp.hospital_id, stamp.created_at),
            )
        # PRAGMA takes no parameters; both values are our own integers.
        connection.execute(f"PRAGMA application_id = {int(kind.application_id)}")
        connection.execute(f"PRAGMA user_version = {int(kind.schema_version)}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()


def count_entries(path: Path, kind: StoreKind) -> int:
    """How many entries the store holds (rows of ``kind.entries_table``; 0 before it exists).

    Only for a file that passed :func:`inspect_store`: the connection may write (as the
    last one closing, it checkpoints the WAL and removes it, as the engine would).
    """
    connection = _connect(path, write=True)
    try:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if kind.entries_table not in tables:
            return 0
        return int(connection.execute(f"SELECT count(*) FROM {kind.entries_table}").fetchone()[0])
    finally:
        connection.close()
