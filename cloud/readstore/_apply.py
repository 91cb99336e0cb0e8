"""Applying a hospital's change feed to the store, one page per transaction.

The contract (``DirectoryService.GetChanges``) decides the rules:

* a change is applied only when its ``version`` is higher than the one held (changes come at
  least once, pages may be re-read); a deletion leaves a tombstone with its version so an
  older copy of the entity delivered later cannot bring it back;
* one transaction per page; the watermark, ``data_time`` and success are saved with the last
  page, so a pass cut short (the edge gone, the primary lost) resumes from the old watermark;
* a snapshot (or a snapshot of some buckets) deletes, after its last page, what the store
  holds of the requested kinds (and buckets) that the snapshot did not contain.

Every page is checked whole before anything of it is written (`validate_page`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from google.type import money_pb2
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.readstore._schema import (
    DEPARTMENTS,
    DOCTOR_DEPARTMENTS,
    DOCTORS,
    SCHEDULES,
    SLOTS,
    SYNC_HOSPITALS,
    SYNC_KINDS,
    TOMBSTONES,
)
from cloud.readstore._validate import Change, FeedError, validate_page
from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_of

__all__ = [
    "TABLES",
    "ChangePass",
    "PassResult",
    "bucket_key",
    "bulk_upsert",
    "insert_for",
    "set_flag",
    "upsert",
]

TABLES: dict[int, tuple[sa.Table, sa.Column[Any]]] = {
    directory_pb2.ENTITY_KIND_DEPARTMENT: (DEPARTMENTS, DEPARTMENTS.c.department_id),
    directory_pb2.ENTITY_KIND_DOCTOR: (DOCTORS, DOCTORS.c.doctor_id),
    directory_pb2.ENTITY_KIND_SCHEDULE: (SCHEDULES, SCHEDULES.c.schedule_id),
    directory_pb2.ENTITY_KIND_SLOT: (SLOTS, SLOTS.c.slot_id),
}
"""The table of each entity kind, and its id column."""

_CHUNK = 1000  # ids per IN (...) list: well under SQLite's and asyncpg's parameter limits
_SKEW = dt.timedelta(minutes=5)  # data_time older than the last by more: the feed went back


def bucket_key(entity_id: str) -> int:
    """The first four bytes of SHA-256 of an id, unsigned: ``bucket_key % n`` is its bucket."""
    return bucket_of(entity_id, 2**32)


def insert_for(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT of the connection's dialect (PostgreSQL or SQLite): it has ON CONFLICT."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(table)


def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    keys: Sequence[str],
    *,
    only: Sequence[str] | None = None,
    newer: bool = False,
    repair: bool = False,
) -> Any:
    """An INSERT … ON CONFLICT DO UPDATE statement for the connection's dialect.

    Args:
        conn: where it will run (PostgreSQL or SQLite).
        table: the table.
        keys: its primary key columns.
        only: columns to update on conflict (default: every non-key column).
        newer: update only when the incoming ``version`` is higher than the held one.
        repair: with ``newer``, also when it is equal (drift repair: same version, other
            content).
    """
    return _upsert(
        conn.dialect.name, table, tuple(keys), None if only is None else tuple(only), newer, repair
    )


@functools.lru_cache(maxsize=64)
def _upsert(
    dialect: str,
    table: sa.Table,
    keys: tuple[str, ...],
    only: tuple[str, ...] | None,
    newer: bool,
    repair: bool,
) -> Any:
    # Built once per shape: constructing one (its EXCLUDED columns) costs more than a
    # small incremental page's whole write.
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    names = only if only is not None else [c.name for c in table.columns if c.name not in keys]
    where = None
    if newer:
        held, incoming = table.c.version, stmt.excluded.version
        where = (held <= incoming) if repair else (held < incoming)
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={n: stmt.excluded[n] for n in names}, where=where
    )


def id_in(conn: AsyncConnection, column: sa.Column[Any], ids: list[str]) -> sa.ColumnElement[bool]:
    """``column IN ids``, as one array parameter on PostgreSQL.

    One parameter keeps the statement the same for every list, so it is compiled once and
    cached, instead of once per list length with a parameter per id.
    """
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, ids, type_=postgresql.ARRAY(sa.String)))
    return column.in_(ids)


def _member(dialect: str, column: sa.Column[Any]) -> sa.ColumnElement[bool]:
    """``column`` is one of the bound list ``ids`` (an array parameter on PostgreSQL)."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
    return column.in_(sa.bindparam("ids", expanding=True))


@functools.lru_cache(maxsize=16)
def _held_and_dead(dialect: str, kind: int) -> Any:
    """What the store holds of some ids and which it deleted, in one round trip.

    Bound parameters: ``h`` (the hospital) and ``ids``.
    """
    table, id_col = TABLES[kind]
    h = sa.bindparam("h", type_=sa.String)
    living = sa.select(
        id_col.label("id"),
        table.c.version,
        table.c.content_digest,
        sa.literal(False).label("dead"),
    ).where(table.c.hospital_id == h, _member(dialect, id_col))
    deleted = sa.select(
        TOMBSTONES.c.entity_id.label("id"),
        TOMBSTONES.c.version,
        sa.cast(sa.null(), sa.LargeBinary).label("content_digest"),
        sa.literal(True).label("dead"),
    ).where(
        TOMBSTONES.c.hospital_id == h,
        TOMBSTONES.c.kind == kind,
        _member(dialect, TOMBSTONES.c.entity_id),
    )
    return sa.union_all(living, deleted)


_BULK = 64  # rows from which COPY beats a batch of INSERTs on PostgreSQL


async def bulk_upsert(
    conn: AsyncConnection,
    table: sa.Table,
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    *,
    repair: bool = False,
) -> None:
    """Version-guarded upsert of many rows (see `upsert`).

    On PostgreSQL, large batches are copied (``COPY``, binary) into a session-local staging
    table and merged with one ``INSERT … SELECT … ON CONFLICT``: a full sync writes hundreds
    of rows per hospital, and this is several times faster than one INSERT per row.
    """
    if conn.dialect.name != "postgresql" or len(rows) < _BULK:
        await conn.execute(upsert(conn, table, keys, newer=True, repair=repair), rows)
        return
    columns = [c.name for c in table.columns]
    staging = f"rs_load_{table.name}"
    raw = await conn.get_raw_connection()
    made: set[str] = raw.info.setdefault("readstore_staging", set())
    if staging not in made:  # once per database session: temporary tables live as long
        await conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.name} INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        made.add(staging)
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        staging, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
    )
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
    await conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
        f"WHERE {table.name}.version {'<=' if repair else '<'} EXCLUDED.version"
    )


def _when(stamp: timestamp_pb2.Timestamp) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, dt.UTC)


def _money(value: money_pb2.Money) -> tuple[int, int, str]:
    return value.units, value.nanos, value.currency_code or "CNY"


def _row(hospital_id: str, c: Change, zone: zoneinfo.ZoneInfo, now: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hospital_id": hospital_id,
        "version": c.version,
        "content_digest": c.digest,
        "bucket_key": bucket_key(c.entity_id),
        "synced_at": now,
    }
    e = c.entity
    if isinstance(e, directory_pb2.Department):
        row.update(
            department_id=e.department_id,
            name=e.name,
            parent_department_id=e.parent_department_id,
            description=e.description,
            location=e.location,
            display_order=e.display_order,
            bookable=e.bookable,
        )
    elif isinstance(e, directory_pb2.Doctor):
        row.update(
            doctor_id=e.doctor_id,
            name=e.name,
            title=e.title,
            title_text=e.title_text,
            specialty=e.specialty,
            introduction=e.introduction,
            photo_url=e.photo_url,
            bookable=e.bookable,
        )
    elif isinstance(e, directory_pb2.Schedule):
        fee = e.fee.cash_amount if e.fee.HasField("cash_amount") else e.fee.total_amount
        units, nanos, currency = _money(fee)
        row.update(
            schedule_id=e.schedule_id,
            department_id=e.department_id,
            doctor_id=e.doctor_id,
            clinic_type=e.clinic_type,
            date=dt.date(e.date.year, e.date.month, e.date.day),
            period=e.period,
            start_minute=(
                e.start_time.hours * 60 + e.start_time.minutes if e.HasField("start_time") else None
            ),
            end_minute=(
                e.end_time.hours * 60 + e.end_time.minutes if e.HasField("end_time") else None
            ),
            location=e.location,
            fee_units=units,
            fee_nanos=nanos,
            fee_currency=currency,
            status=e.status,
            slot_mode=e.slot_mode,
            capacity=e.capacity,
            remaining=e.remaining,
            release_time=_when(e.release_time) if e.HasField("release_time") else None,
        )
    elif isinstance(e, directory_pb2.Slot):
        start = _when(e.start_time)
        override = _money(e.fee_override) if e.HasField("fee_override") else (None, None, None)
        row.update(
            slot_id=e.slot_id,
            schedule_id=e.schedule_id,
            date=start.astimezone(zone).date(),
            start_at=start,
            end_at=_when(e.end_time) if e.HasField("end_time") else None,
            status=e.status,
            capacity=e.capacity,
            remaining=e.remaining,
            ticket_number=e.ticket_number,
            fee_units=override[0],
            fee_nanos=override[1],
            fee_currency=override[2],
        )
    return row


@dataclasses.dataclass
class PassResult:
    """What one pass (all pages of one GetChanges request) did."""

    pages: int = 0
    """Pages applied."""
    changes: int = 0
    """Changes received (after de-duplication within pages)."""
    written: int = 0
    """Entities inserted or updated."""
    deleted: int = 0
    """Entities deleted (by a deletion change or because a snapshot lacked them)."""
    stale: int = 0
    """Changes ignored because the store holds a higher version (the feed went back)."""
    snapshot: bool = False
    """Whether the pass was a snapshot."""
    done: bool = False
    """Whether the last page was applied (the watermark saved)."""


class ChangePass:
    """One pass of ``GetChanges`` for one hospital: feed it the pages in order with `apply`.

    Args:
        engine: the primary database.
        hospital_id: the hospital.
        kinds: the kinds requested.
        since: the watermark the request carried ("" for a full pass).
        zone: the hospital's time zone (slot dates are local).
        buckets: for a bucket pass, ``(bucket_count, buckets)``: a drift repair. Its
            watermark is not saved (it covers only some entities), and it replaces entities
            whose content differs even at an equal version.
        last_data_time: ``data_time`` of the last completed pass of these kinds, to notice a
            feed that went back in time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        hospital_id: str,
        kinds: tuple[int, ...],
        *,
        since: str,
        zone: zoneinfo.ZoneInfo,
        buckets: tuple[int, frozenset[int]] | None = None,
        last_data_time: dt.datetime | None = None,
    ) -> None:
        self._engine = engine
        self.hospital_id = hospital_id
        self.kinds = kinds
        self.since = since
        self._zone = zone
        self._buckets = buckets
        self._last_data_time = last_data_time
        self._first_snapshot: bool | None = None
        self._seen: dict[int, set[str]] = {k: set() for k in kinds}
        self.result = PassResult()
        self.saved: tuple[str, dt.datetime | None] | None = None
        """After the last page of a full or incremental pass: the watermark and data time
        it saved (a bucket pass saves none)."""

    async def apply(self, page: directory_pb2.GetChangesResponse) -> bool:
        """Check and apply one page in one transaction.

        Returns:
            True after the last page (the pass is complete and its watermark saved).

        Raises:
            FeedError: the page (or the pass so far) breaks the contract; nothing of this
                page was written.
        """
        if self.result.done:
            raise FeedError("a page arrived after the last page of the pass")
        count, wanted = self._buckets if self._buckets is not None else (0, None)
        changes = validate_page(page, kinds=self.kinds, buckets=wanted, bucket_count=count)
        if self._first_snapshot is None:
            self._first_snapshot = page.snapshot
        elif page.snapshot != self._first_snapshot:
            raise FeedError("snapshot: differs between pages of one pass")
        snapshot = page.snapshot or not self.since
        last = not page.next_page_token
        if last and not page.watermark and self._buckets is None:
            raise FeedError("watermark: the last page of a pass must carry one")
        now = dt.datetime.now(dt.UTC)
        data_time = min(_when(page.data_time), now) if page.HasField("data_time") else now
        by_kind: dict[int, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.kind, []).append(change)
        async with self._engine.begin() as conn:
            for kind in self.kinds:
                if kind in by_kind:
                    await self._write(conn, kind, by_kind[kind], snapshot=snapshot, now=now)
            if last:
                if snapshot:
                    await self._delete_unseen(conn)
                await self._finish(
                    conn, page, data_time=data_time, snapshot=snapshot, now=now, count=len(changes)
                )
        self.result.pages += 1
        self.result.changes += len(changes)
        self.result.snapshot = snapshot
        self.result.done = last
        return last

    async def _write(
        self,
        conn: AsyncConnection,
        kind: int,
        changes: list[Change],
        *,
        snapshot: bool,
        now: dt.datetime,
    ) -> None:
        table, id_col = TABLES[kind]
        h = self.hospital_id
        repair = self._buckets is not None
        ids = [c.entity_id for c in changes]
        held: dict[str, int] = {}
        digests: dict[str, bytes] = {}
        dead: dict[str, int] = {}
        held_and_dead = _held_and_dead(conn.dialect.name, kind)
        for chunk in _chunks(ids):
            params = {"h": h, "ids": chunk}
            for r in await conn.execute(held_and_dead, params):
                if r.dead:
                    dead[r.id] = r.version
                else:
                    held[r.id], digests[r.id] = r.version, bytes(r.content_digest)
        writes: list[dict[str, Any]] = []
        gone: list[Change] = []
        for c in changes:
            have = held.get(c.entity_id)
            if c.entity is None:
                if have is not None and have >= c.version:
                    self.result.stale += have > c.version
                    continue
                gone.append(c)
                continue
            if (tomb := dead.get(c.entity_id)) is not None and tomb >= c.version:
                self.result.stale += tomb > c.version
                continue
            if snapshot:
                self._seen[kind].add(c.entity_id)
            # A drift repair takes the edge's content even at an equal version: the HIS
            # changed it without a trace the feed could see (that is what drift is).
            repaired = repair and have == c.version and digests.get(c.entity_id) != c.digest
            if have is not None and have >= c.version and not repaired:
                self.result.stale += have > c.version
                continue
            writes.append(_row(h, c, self._zone, now))
        if writes:
            await bulk_upsert(conn, table, ["hospital_id", id_col.name], writes, repair=repair)
            self.result.written += len(writes)
            if kind == directory_pb2.ENTITY_KIND_DOCTOR:
                written = {w["doctor_id"] for w in writes}
                await self._doctor_departments(
                    conn, [c for c in changes if c.entity is not None and c.entity_id in written]
                )
        if gone:
            for chunk in _chunks([c.entity_id for c in gone]):
                await conn.execute(
                    sa.delete(table).where(table.c.hospital_id == h, id_in(conn, id_col, chunk))
                )
                if kind == directory_pb2.ENTITY_KIND_DOCTOR:
                    await conn.execute(
                        sa.delete(DOCTOR_DEPARTMENTS).where(
                            DOCTOR_DEPARTMENTS.c.hospital_id == h,
                            id_in(conn, DOCTOR_DEPARTMENTS.c.doctor_id, chunk),
                        )
                    )
            stmt = upsert(
                conn,
                TOMBSTONES,
                ["hospital_id", "kind", "entity_id"],
                only=["version", "deleted_at"],
                newer=True,
            )
            await conn.execute(
                stmt,
                [
                    {"hospital_id": h, "kind": kind, "entity_id": c.entity_id,
                     "version": c.version, "deleted_at": now}
                    for c in gone
                ],
            )  # fmt: skip
            self.result.deleted += len(gone)

    async def _doctor_departments(self, conn: AsyncConnection, doctors: list[Change]) -> None:
        h = self.hospital_id
        for chunk in _chunks([c.entity_id for c in doctors]):
            await conn.execute(
                sa.delete(DOCTOR_DEPARTMENTS).where(
                    DOCTOR_DEPARTMENTS.c.hospital_id == h,
                    id_in(conn, DOCTOR_DEPARTMENTS.c.doctor_id, chunk),
                )
            )
        pairs = {
            (c.entity_id, dep)
            for c in doctors
            if isinstance(c.entity, directory_pb2.Doctor)
            for dep in c.entity.department_ids
        }
        if pairs:
            await conn.execute(
                sa.insert(DOCTOR_DEPARTMENTS),
                [{"hospital_id": h, "doctor_id": d, "department_id": p} for d, p in sorted(pairs)],
            )

    async def _delete_unseen(self, conn: AsyncConnection) -> None:
        h = self.hospital_id
        for kind in self.kinds:
            table, id_col = TABLES[kind]
            rows = await conn.execute(
                sa.select(id_col, table.c.bucket_key).where(table.c.hospital_id == h)
            )
            seen = self._seen[kind]
            if self._buckets is None:
                gone = [r[0] for r in rows if r[0] not in seen]
            else:
                count, wanted = self._buckets
                gone = [r[0] for r in rows if r[0] not in seen and r[1] % count in wanted]
            for chunk in _chunks(gone):
                await conn.execute(
                    sa.delete(table).where(table.c.hospital_id == h, id_in(conn, id_col, chunk))
                )
                if kind == directory_pb2.ENTITY_KIND_DOCTOR:
                    await conn.execute(
                        sa.delete(DOCTOR_DEPARTMENTS).where(
                            DOCTOR_DEPARTMENTS.c.hospital_id == h,
                            id_in(conn, DOCTOR_DEPARTMENTS.c.doctor_id, chunk),
                        )
                    )
            self.result.deleted += len(gone)

    async def _finish(
        self,
        conn: AsyncConnection,
        page: directory_pb2.GetChangesResponse,
        *,
        data_time: dt.datetime,
        snapshot: bool,
        now: dt.datetime,
        count: int,
    ) -> None:
        h = self.hospital_id
        went_back = self._last_data_time is not None and data_time < self._last_data_time - _SKEW
        if self._buckets is None:
            values = {
                "watermark": page.watermark,
                "last_attempt": now,
                "last_success": now,
                "data_time": (
                    max(data_time, self._last_data_time) if self._last_data_time else data_time
                ),
                "last_error": "",
                "failures": 0,
                "last_changes": self.result.changes + count,
                "last_snapshot": snapshot,
            }
            stmt = upsert(conn, SYNC_KINDS, ["hospital_id", "kind"], only=list(values))
            await conn.execute(stmt, [{"hospital_id": h, "kind": k, **values} for k in self.kinds])
            self.saved = (page.watermark, values["data_time"])  # type: ignore[assignment]
        flags = []
        if self.result.stale and not snapshot:
            flags.append(
                f"feed went back: {self.result.stale} change(s) older than the store "
                f"(kinds {', '.join(map(str, self.kinds))}); ignored"
            )
        if went_back:
            assert self._last_data_time is not None
            flags.append(
                f"feed went back: data_time {data_time.isoformat(timespec='seconds')} is "
                f"before the last pass's {self._last_data_time.isoformat(timespec='seconds')}"
            )
        if flags:
            await set_flag(conn, h, "; ".join(flags), now)


async def set_flag(conn: AsyncConnection, hospital_id: str, message: str, now: dt.datetime) -> None:
    """Record that a hospital's feed misbehaved (shown by ``hplus cloud sync status``)."""
    stmt = upsert(conn, SYNC_HOSPITALS, ["hospital_id"], only=["flag", "flagged_at"])
    await conn.execute(
        stmt, [{"hospital_id": hospital_id, "flag": message[:1000], "flagged_at": now}]
    )


def _chunks(items: Sequence[str] | Iterable[str]) -> Iterable[list[str]]:
    items = list(items)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
