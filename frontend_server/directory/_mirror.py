"""The edge's directory mirror: what the HIS publishes, versioned, with a change log, in SQLite.

One file in the edge's data directory (mode 0600). It is a cache: when it is damaged or of an
unknown layout it is moved aside and rebuilt from the HIS, under a new store id (so every
watermark the cloud holds gets a snapshot, and versions keep increasing).

Layout:

* ``entities``: the current state of every entity — id, log position (``seq``, which is also
  its version), local date (schedules and slots), bucket hash, content digest, whether it is
  deleted (a tombstone), and the ready-to-send ``EntityChange``;
* ``history``: the states superseded in the last ``history_seconds``, each with the position
  that superseded it (``until``), so a pass that began at position P still reads the state
  as of P while the mirror keeps changing;
* ``meta``: store id, head, horizon, the HIS's own watermark, when the HIS was last read.

Positions are microseconds of the wall clock, made strictly increasing: a rebuilt mirror
starts above every version the old one issued, and a version increases only when an
entity's content digest changes (never merely because the HIS was read again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from frontend_server.directory._feed import DATED_KINDS, ENTITY_KINDS, FeedEntry, FeedQuery
from frontend_server.sqlite import sqlite_engine
from hplus.hospital.v1 import directory_pb2
from mesh.digest import content_digest
from mesh.files import make_private_dir, sqlite_files

__all__ = ["DirectoryMirror", "MirrorEntity", "MirrorError", "MirrorStats", "MirrorUpdate"]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = "1"
_CHUNK = 256  # rows per query while a page is assembled
_SLICE = 200  # entities digested between two yields to the event loop
_ONEOF: dict[int, str] = {
    directory_pb2.ENTITY_KIND_DEPARTMENT: "department",
    directory_pb2.ENTITY_KIND_DOCTOR: "doctor",
    directory_pb2.ENTITY_KIND_SCHEDULE: "schedule",
    directory_pb2.ENTITY_KIND_SLOT: "slot",
}
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_metadata = MetaData()
_entities = Table(
    "entities",
    _metadata,
    Column("kind", Integer, primary_key=True),
    Column("entity_id", Text, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("day", Integer),
    Column("h", Integer, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("entities_by_seq", "seq"),
)
_history = Table(
    "history",
    _metadata,
    Column("kind", Integer, primary_key=True),
    Column("entity_id", Text, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("day", Integer),
    Column("h", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("until", Integer, nullable=False),
    Index("history_by_until", "until"),
)
_meta = Table(
    "meta",
    _metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)


class MirrorError(Exception):
    """An update the mirror refuses (e.g. a directory beyond its size bound)."""


class _Damaged(Exception):
    """The mirror file cannot be used as it is (corrupt, or an unknown layout)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MirrorEntity:
    """One entity as the HIS publishes it now."""

    kind: int
    """Its ``EntityKind``."""
    entity_id: str
    """Its id."""
    day: dt.date | None
    """Its local date (schedules and slots); None for departments and doctors."""
    message: Message
    """The contract message (``Department`` … ``Slot``); version and update time are set
    by the mirror."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MirrorUpdate:
    """What one read of the HIS found."""

    entities: Sequence[MirrorEntity]
    """Entities read (all of them for a complete kind, the changed ones otherwise)."""
    deleted: Sequence[tuple[int, str]] = ()
    """(kind, id) the HIS reported deleted."""
    complete: frozenset[int] = frozenset()
    """Kinds read in full: their entities in scope that were not read are deleted."""
    scope_start: dt.date
    """The hospital's current date: dated entities before it age out (never 'deleted')."""
    read_time: dt.datetime
    """When the HIS was read (aware)."""
    his_watermark: str | None = None
    """The HIS's own change-feed watermark after this read; None leaves it unchanged."""


@dataclasses.dataclass(frozen=True)
class MirrorStats:
    """What an update changed."""

    changed: int
    """Entities created or changed (new versions)."""
    deleted: int
    """Entities deleted (tombstones)."""
    aged: int
    """Dated entities dropped because their day has passed."""
    entities: int
    """Current (non-deleted) entities after the update."""


class _Known(NamedTuple):
    seq: int
    digest: bytes
    day: int | None
    deleted: bool


def _head32(entity_id: str) -> int:
    # The same hash mesh.digest.bucket_of uses: bucket = h % bucket_count, in SQL.
    return int.from_bytes(hashlib.sha256(entity_id.encode()).digest()[:4], "big")


def _damage(err: BaseException) -> bool:
    orig = getattr(err, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _DAMAGE_CODES


class DirectoryMirror:
    """The directory mirror (see the module docstring); a :class:`FeedSource`.

    Args:
        path: the SQLite file (created mode 0600 when missing).
        clock: wall clock in epoch seconds (tests pass their own).
        history_seconds: how long superseded states are kept for passes in progress.
        tombstone_seconds: how long deletions are kept; a watermark older than a pruned
            deletion gets a snapshot.
        max_entities: largest directory accepted from the HIS (a bound on what it can make
            the edge hold).
        max_entity_bytes: largest serialized entity accepted; bigger ones are skipped and
            counted in the log.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        history_seconds: float = 900.0,
        tombstone_seconds: float = 7 * 86400.0,
        max_entities: int = 500_000,
        max_entity_bytes: int = 256 * 1024,
    ) -> None:
        self.path = path
        self._clock = clock
        self._history_us = int(history_seconds * 1e6)
        self._tombstone_us = int(tombstone_seconds * 1e6)
        self._max_entities = max_entities
        self._max_entity_bytes = max_entity_bytes
        self._engine: AsyncEngine | None = None
        self._known: dict[tuple[int, str], _Known] = {}
        self._store_id = ""
        self._head = 0
        self._horizon = 0
        self._history_floor = 0
        self._data_time: dt.datetime | None = None
        self._full_time: dt.datetime | None = None
        self._his_watermark: str | None = None
        self._writing = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Opens the file, or rebuilds it empty when it is damaged or of another layout."""
        try:
            await self._open()
        except _Damaged as err:
            await self._rebuild(str(err))
        except DBAPIError as err:
            if not _damage(err):
                raise
            await self._rebuild(str(err.orig))

    async def aclose(self) -> None:
        """Closes the file."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def __aenter__(self) -> DirectoryMirror:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _connect_file(self) -> AsyncEngine:
        # A cache of what the HIS publishes, but it sits beside the stores: owner-only, and
        # created 0600 so SQLite's -wal and -shm files (which take its mode) are too.
        make_private_dir(self.path.parent, files=sqlite_files(self.path))
        return sqlite_engine(self.path)

    async def _open(self) -> None:
        self._engine = self._connect_file()
        async with self._engine.begin() as conn:
            tables = (await conn.execute(text("SELECT count(*) FROM sqlite_master"))).scalar()
            if not tables:
                await conn.run_sync(_metadata.create_all)
                await self._write_meta(
                    conn, {"schema": _SCHEMA_VERSION, "store_id": secrets.token_hex(8)}
                )
            else:
                check = (await conn.execute(text("PRAGMA quick_check"))).scalar()
                if check != "ok":
                    raise _Damaged(f"integrity check: {check}")
        await self._load()

    async def _load(self) -> None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            tables = {
                r[0]
                for r in await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table'")
                )
            }
            if not {"entities", "history", "meta"} <= tables:
                raise _Damaged("tables are missing")
            meta = {r.key: r.value for r in await conn.execute(_meta.select())}
            if meta.get("schema") != _SCHEMA_VERSION or not meta.get("store_id"):
                raise _Damaged(f"unknown layout {meta.get('schema')!r}")
            rows = await conn.execute(
                text("SELECT kind, entity_id, seq, digest, day, deleted FROM entities")
            )
            known = {
                (r.kind, r.entity_id): _Known(r.seq, r.digest, r.day, bool(r.deleted)) for r in rows
            }
        self._known = known
        self._store_id = meta["store_id"]
        self._head = int(meta.get("head", "0"))
        self._horizon = int(meta.get("horizon", "0"))
        self._history_floor = int(meta.get("history_floor", "0"))
        self._his_watermark = meta.get("his_watermark") or None
        self._data_time = _parse_time(meta.get("data_time"))
        self._full_time = _parse_time(meta.get("full_time"))

    async def _rebuild(self, reason: str) -> None:
        log.warning("directory mirror %s is damaged (%s): rebuilding it from the HIS", self.path,
                    reason)  # fmt: skip
        await self.aclose()
        aside = self.path.with_name(self.path.name + ".damaged")
        with contextlib.suppress(FileNotFoundError):
            self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).unlink()
        self._known = {}
        self._head = self._horizon = self._history_floor = 0
        self._data_time = self._full_time = None
        self._his_watermark = None
        await self._open()

    async def rebuild_if_damaged(self, err: BaseException) -> bool:
        """Rebuilds the mirror when ``err`` says its file is corrupt.

        Args:
            err: an error a read or an update raised.

        Returns:
            Whether the mirror was rebuilt.
        """
        if isinstance(err, DBAPIError) and _damage(err):
            await self._rebuild(str(err.orig))
            return True
        return False

    @staticmethod
    async def _write_meta(conn: AsyncConnection, values: dict[str, str]) -> None:
        await conn.execute(
            text("INSERT OR REPLACE INTO meta (key, value) VALUES (:key, :value)"),
            [{"key": k, "value": v} for k, v in values.items()],
        )

    # -- state -------------------------------------------------------------------------

    @property
    def store_id(self) -> str:
        """This mirror's id (a new one after each rebuild)."""
        return self._store_id

    @property
    def head(self) -> int:
        """Position of the last committed change."""
        return self._head

    @property
    def horizon(self) -> int:
        """Position of the newest pruned deletion: older watermarks get a snapshot."""
        return self._horizon

    @property
    def data_time(self) -> dt.datetime | None:
        """When the HIS was last read successfully (None: never, since the last rebuild)."""
        return self._data_time

    @property
    def full_time(self) -> dt.datetime | None:
        """When the HIS was last read in full."""
        return self._full_time

    @property
    def his_watermark(self) -> str | None:
        """The HIS's own change-feed watermark, when it has one."""
        return self._his_watermark

    @property
    def size(self) -> int:
        """Current (non-deleted) entities."""
        return sum(not k.deleted for k in self._known.values())

    # -- updates -----------------------------------------------------------------------

    def _seq(self) -> int:
        return max(int(self._clock() * 1_000_000), self._head + 1)

    async def apply(self, update: MirrorUpdate) -> MirrorStats:
        """Records what a read of the HIS found, in one transaction.

        Entities whose content digest changed get a new version; entities of complete
        kinds that were not read, and those the HIS reported deleted, get a tombstone;
        dated entities before ``scope_start`` age out; superseded states and deletions
        older than their retention are pruned.

        Args:
            update: the read.

        Returns:
            What changed.

        Raises:
            MirrorError: the HIS published more entities than ``max_entities``.
        """
        if len(update.entities) > self._max_entities:
            raise MirrorError(
                f"the HIS published {len(update.entities)} directory entities, more than the "
                f"bound of {self._max_entities}"
            )
        async with self._writing:
            return await self._apply(update)

    async def _apply(self, update: MirrorUpdate) -> MirrorStats:
        assert self._engine is not None
        seq = self._seq()
        now = update.read_time
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(now)
        scope = update.scope_start.toordinal()
        rows: list[dict[str, Any]] = []
        superseded: list[dict[str, Any]] = []
        seen: set[tuple[int, str]] = set()
        oversized = 0
        for i, e in enumerate(update.entities, 1):
            if i % _SLICE == 0:
                await asyncio.sleep(0)  # thousands of digests: let the edge's other work run
            key = (e.kind, e.entity_id)
            day = e.day.toordinal() if e.day is not None else None
            if key in seen or (day is not None and day < scope):
                continue  # a repeat, or a day that has passed (it ages out)
            seen.add(key)
            digest = content_digest(e.message)
            known = self._known.get(key)
            if known is not None and not known.deleted and known.digest == digest:
                continue
            message = type(e.message)()
            message.CopyFrom(e.message)
            message.version = seq  # type: ignore[attr-defined]
            message.update_time.CopyFrom(stamp)  # type: ignore[attr-defined]
            change = directory_pb2.EntityChange(
                kind=e.kind,  # type: ignore[arg-type]
                entity_id=e.entity_id,
                version=seq,
                change_time=stamp,
                content_digest=digest,
            )
            getattr(change, _ONEOF[e.kind]).CopyFrom(message)
            data = change.SerializeToString(deterministic=True)
            if len(data) > self._max_entity_bytes:
                oversized += 1
                continue
            rows.append(_row(e.kind, e.entity_id, seq, day, digest, False, data))
            if known is not None:
                superseded.append({"kind": e.kind, "entity_id": e.entity_id, "until": seq})
            seq += 1
        gone = [k for k in update.deleted if k not in seen]
        for key, known in self._known.items():
            if key in seen or known.deleted or key[0] not in update.complete:
                continue
            if known.day is not None and known.day < scope:
                continue  # ages out below, not a deletion
            gone.append(key)
        deleted = 0
        for kind, entity_id in dict.fromkeys(gone):
            known = self._known.get((kind, entity_id))
            if known is None or known.deleted or (known.day is not None and known.day < scope):
                continue
            change = directory_pb2.EntityChange(
                kind=kind,  # type: ignore[arg-type]
                entity_id=entity_id,
                version=seq,
                change_time=stamp,
                deleted=True,
            )
            data = change.SerializeToString(deterministic=True)
            rows.append(_row(kind, entity_id, seq, known.day, b"", True, data))
            superseded.append({"kind": kind, "entity_id": entity_id, "until": seq})
            deleted += 1
            seq += 1
        if oversized:
            log.warning("directory mirror: %d entities above %d bytes skipped", oversized,
                        self._max_entity_bytes)  # fmt: skip
        head = seq - 1 if rows else self._head
        now_us = max(int(self._clock() * 1_000_000), head)
        history_floor = max(self._history_floor, now_us - self._history_us)
        tombstone_cut = now_us - self._tombstone_us
        aged_keys = [k for k, v in self._known.items() if v.day is not None and v.day < scope]
        async with self._engine.begin() as conn:
            if superseded:
                await conn.execute(
                    text(
                        "INSERT OR REPLACE INTO history "
                        "(kind, entity_id, seq, day, h, deleted, data, until) "
                        "SELECT kind, entity_id, seq, day, h, deleted, data, :until "
                        "FROM entities WHERE kind = :kind AND entity_id = :entity_id"
                    ),
                    superseded,
                )
            if rows:
                await conn.execute(_entities.insert().prefix_with("OR REPLACE"), rows)
            if aged_keys:
                await conn.execute(
                    text("DELETE FROM entities WHERE day IS NOT NULL AND day < :day"),
                    {"day": scope},
                )
                await conn.execute(
                    text("DELETE FROM history WHERE day IS NOT NULL AND day < :day"),
                    {"day": scope},
                )
            await conn.execute(
                text("DELETE FROM history WHERE until < :cut"), {"cut": history_floor}
            )
            pruned = (
                await conn.execute(
                    text("SELECT max(seq) FROM entities WHERE deleted = 1 AND seq < :cut"),
                    {"cut": tombstone_cut},
                )
            ).scalar()
            horizon = max(self._horizon, int(pruned or 0))
            if pruned:
                await conn.execute(
                    text("DELETE FROM entities WHERE deleted = 1 AND seq < :cut"),
                    {"cut": tombstone_cut},
                )
            meta = {
                "head": str(head),
                "horizon": str(horizon),
                "history_floor": str(history_floor),
                "data_time": now.isoformat(),
            }
            if update.complete >= frozenset(ENTITY_KINDS):
                meta["full_time"] = now.isoformat()
            if update.his_watermark is not None:
                meta["his_watermark"] = update.his_watermark
            await self._write_meta(conn, meta)
        # Committed: only now may readers see the new head.
        for r in rows:
            self._known[(r["kind"], r["entity_id"])] = _Known(
                r["seq"], r["digest"], r["day"], bool(r["deleted"])
            )
        for key in aged_keys:
            self._known.pop(key, None)
        if pruned:
            self._known = {
                k: v for k, v in self._known.items() if not (v.deleted and v.seq < tombstone_cut)
            }
        self._head = head
        self._horizon = horizon
        self._history_floor = history_floor
        self._data_time = now
        if "full_time" in meta:
            self._full_time = now
        if update.his_watermark is not None:
            self._his_watermark = update.his_watermark
        return MirrorStats(
            changed=len(rows) - deleted, deleted=deleted, aged=len(aged_keys), entities=self.size
        )

    async def forget_his_watermark(self) -> None:
        """Drops the HIS's watermark (it refused it): the next read is a full one."""
        assert self._engine is not None
        async with self._engine.begin() as conn:
            await conn.execute(text("DELETE FROM meta WHERE key = 'his_watermark'"))
        self._his_watermark = None

    # -- reads (FeedSource) ------------------------------------------------------------

    def _state_as_of(self, at: int, *, snapshot: bool) -> str:
        if at >= self._history_floor:
            return (
                "SELECT kind, entity_id, seq, day, h, deleted, data FROM entities "
                "WHERE seq <= :at UNION ALL "
                "SELECT kind, entity_id, seq, day, h, deleted, data FROM history "
                "WHERE seq <= :at AND until > :at"
            )
        # The states of a pass this old were pruned: serve the current ones. Still correct
        # for the cloud (at least once, newer versions win), only no longer as of one point.
        where = "" if snapshot else " WHERE seq <= :at"
        return f"SELECT kind, entity_id, seq, day, h, deleted, data FROM entities{where}"

    @staticmethod
    def _filters(query: FeedQuery, params: dict[str, Any]) -> tuple[str, list[Any]]:
        clauses = ["kind IN :kinds", "(day IS NULL OR day >= :day)"]
        binds: list[Any] = [bindparam("kinds", expanding=True)]
        params["kinds"] = sorted(query.kinds)
        params["day"] = query.scope_start.toordinal()
        if query.buckets is not None:
            clauses.append("(h % :bucket_count) IN :buckets")
            binds.append(bindparam("buckets", expanding=True))
            params["bucket_count"] = query.buckets.count
            params["buckets"] = sorted(query.buckets.buckets)
        return " AND ".join(clauses), binds

    async def _rows(self, sql: str, binds: list[Any], params: dict[str, Any]) -> list[Any]:
        assert self._engine is not None
        statement = text(sql).bindparams(*binds)
        async with self._engine.connect() as conn:
            return list(await conn.execute(statement, params))

    async def snapshot(
        self, *, at: int, after: tuple[int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """The non-deleted entities as of ``at`` in (kind, id) order, after ``after``."""
        params: dict[str, Any] = {"at": at, "limit": _CHUNK}
        where, binds = self._filters(query, params)
        source = self._state_as_of(at, snapshot=True)
        cursor = after
        while True:
            position = ""
            if cursor is not None:
                position = " AND (kind, entity_id) > (:ck, :ci)"
                params["ck"], params["ci"] = cursor
            rows = await self._rows(
                f"SELECT kind, entity_id, seq, data FROM ({source}) "
                f"WHERE deleted = 0 AND {where}{position} "
                "ORDER BY kind, entity_id LIMIT :limit",
                binds,
                params,
            )
            for r in rows:
                yield FeedEntry(r.kind, r.entity_id, r.seq, r.data)
            if len(rows) < _CHUNK:
                return
            cursor = (rows[-1].kind, rows[-1].entity_id)

    async def changes(
        self, *, since: int, at: int, after: tuple[int, int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """Entries of the state as of ``at`` after ``since``, in (seq, kind, id) order."""
        params: dict[str, Any] = {"at": at, "since": since, "limit": _CHUNK}
        where, binds = self._filters(query, params)
        source = self._state_as_of(at, snapshot=False)
        cursor = after
        while True:
            position = ""
            if cursor is not None:
                position = " AND (seq, kind, entity_id) > (:cs, :ck, :ci)"
                params["cs"], params["ck"], params["ci"] = cursor
            rows = await self._rows(
                f"SELECT kind, entity_id, seq, data FROM ({source}) "
                f"WHERE seq > :since AND {where}{position} "
                "ORDER BY seq, kind, entity_id LIMIT :limit",
                binds,
                params,
            )
            for r in rows:
                yield FeedEntry(r.kind, r.entity_id, r.seq, r.data)
            if len(rows) < _CHUNK:
                return
            cursor = (rows[-1].seq, rows[-1].kind, rows[-1].entity_id)

    async def digest_entries(self, kind: int, scope_start: dt.date) -> list[tuple[str, bytes]]:
        """(id, content digest) of the current entities of ``kind`` in scope."""
        day = scope_start.toordinal()
        dated = kind in DATED_KINDS
        return [
            (entity_id, k.digest)
            for (k_kind, entity_id), k in self._known.items()
            if k_kind == kind
            and not k.deleted
            and (not dated or (k.day is not None and k.day >= day))
        ]

    def entity_ids(self, kinds: Iterable[int] = ENTITY_KINDS) -> set[tuple[int, str]]:
        """(kind, id) of the current non-deleted entities (for tests and tools)."""
        wanted = set(kinds)
        return {k for k, v in self._known.items() if k[0] in wanted and not v.deleted}


def _row(
    kind: int, entity_id: str, seq: int, day: int | None, digest: bytes, deleted: bool, data: bytes
) -> dict[str, Any]:
    return {
        "kind": kind,
        "entity_id": entity_id,
        "seq": seq,
        "day": day,
        "h": _head32(entity_id),
        "digest": digest,
        "deleted": int(deleted),
        "data": data,
    }


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None
