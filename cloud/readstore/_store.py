"""The public read store: master data, synced reference data, sync state; one primary.

`ReadStore` owns its engines (`ReplicaSet`): writes (imports, feed pages, sync state) go to
the primary, reads (`ReadStore.queries`) to a current replica. The sync engine
(`cloud.sync`) is its only writer of reference data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zoneinfo
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.readstore._apply import TABLES, ChangePass, insert_for, set_flag, upsert
from cloud.readstore._convert import aware
from cloud.readstore._hospitals import HospitalRecord, pinyin_initials
from cloud.readstore._query import OnlineCheck, ReadQueries
from cloud.readstore._replicas import ReplicaSet
from cloud.readstore._schema import (
    DOCTOR_DEPARTMENTS,
    HOSPITALS,
    SCHEDULES,
    SLOTS,
    SYNC_HOSPITALS,
    SYNC_KINDS,
    TOMBSTONES,
)
from cloud.readstore._validate import ALL_KINDS
from mesh.digest import bucket_digests

__all__ = ["HospitalSyncStatus", "KindStatus", "ReadStore", "migrate_readstore"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_DEFAULT_ZONE = "Asia/Shanghai"


async def migrate_readstore(engine: AsyncEngine) -> None:
    """Bring the read store's tables to the newest schema (own version table)."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_readstore")


@dataclasses.dataclass(frozen=True)
class KindStatus:
    """Sync state of one entity kind of one hospital."""

    kind: int
    """``hplus.hospital.v1.EntityKind``."""
    watermark: str
    """Saved with the last completed pass ("" before the first)."""
    last_attempt: dt.datetime | None
    """When a pass last started or failed."""
    last_success: dt.datetime | None
    """When a pass last completed."""
    data_time: dt.datetime | None
    """The edge's ``data_time`` of that pass: how fresh the data is (``as_of``)."""
    last_error: str
    """Why the last pass failed ("" after a success)."""
    last_error_at: dt.datetime | None
    """When it failed."""
    failures: int
    """Failed passes since the last success."""
    last_changes: int
    """Changes in the last completed pass."""
    last_snapshot: bool
    """Whether the last completed pass was a snapshot."""


@dataclasses.dataclass(frozen=True)
class HospitalSyncStatus:
    """Sync state of one hospital (``hplus cloud sync status``)."""

    hospital_id: str
    """The hospital."""
    name: str
    """Its name from the master data ("" when not imported)."""
    kinds: dict[int, KindStatus]
    """Per entity kind; missing kinds were never synced."""
    lease_owner: str | None
    """The node syncing it."""
    lease_until: dt.datetime | None
    """Until when that node holds it."""
    offline_since: dt.datetime | None
    """Since when its tunnel was found down (``None`` while connected)."""
    last_drift_check: dt.datetime | None
    """When its digests were last compared."""
    drift_result: str
    """What that comparison found."""
    flag: str
    """The last contract violation of its feed ("" if none)."""
    flagged_at: dt.datetime | None
    """When that was."""

    @property
    def last_success(self) -> dt.datetime | None:
        """The oldest last success over all kinds (``None`` if a kind never synced)."""
        stamps = [self.kinds[k].last_success for k in ALL_KINDS if k in self.kinds]
        if len(stamps) < len(ALL_KINDS) or any(s is None for s in stamps):
            return None
        return min(s for s in stamps if s is not None)

    def lag(self, now: dt.datetime) -> dt.timedelta | None:
        """How old the oldest kind's data is (now - its ``data_time``)."""
        times = [self.kinds[k].data_time for k in ALL_KINDS if k in self.kinds]
        if len(times) < len(ALL_KINDS) or any(t is None for t in times):
            return None
        return now - min(t for t in times if t is not None)

    def stale(self, now: dt.datetime, stale_after: float) -> bool:
        """Whether patients should be told the data may be out of date."""
        lag = self.lag(now)
        return (
            self.offline_since is not None or lag is None or lag > dt.timedelta(seconds=stale_after)
        )


class ReadStore:
    """The public read store.

    Build with `open` (migrates the primary, starts the replica checker); `close` releases
    everything.

    Args:
        replicas: the store's engines.
        online: which hospitals are connected now (for ``online_booking_available``).
    """

    def __init__(self, replicas: ReplicaSet, *, online: OnlineCheck | None = None) -> None:
        self.replicas = replicas
        self.queries = ReadQueries(replicas, online=online)
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}

    @classmethod
    async def open(
        cls,
        primary: str | AsyncEngine,
        *,
        replica_urls: Sequence[str] = (),
        max_replica_lag: float = 5.0,
        replica_check_interval: float = 2.0,
        online: OnlineCheck | None = None,
    ) -> ReadStore:
        """Migrate the primary, start checking replicas, and return the store.

        Args:
            primary: the primary's SQLAlchemy URL (or an engine, which the store then owns).
            replica_urls: URLs of its streaming replicas.
            max_replica_lag: seconds a replica may lag and still serve reads.
            replica_check_interval: seconds between lag checks.
            online: which hospitals are connected now.

        Raises:
            cloud.db.DatabaseError: the primary cannot be reached or a URL is malformed.
        """
        replicas = ReplicaSet(
            primary,
            replica_urls,
            max_lag=max_replica_lag,
            check_interval=replica_check_interval,
        )
        try:
            await migrate_readstore(replicas.primary)
            await replicas.start()
        except BaseException:
            await replicas.close()
            raise
        return cls(replicas, online=online)

    async def close(self) -> None:
        """Stop the replica checker and dispose of the engines."""
        await self.replicas.close()

    async def __aenter__(self) -> ReadStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def primary(self) -> AsyncEngine:
        """The primary's engine (every write)."""
        return self.replicas.primary

    # -- master data ------------------------------------------------------------------------

    async def put_hospitals(self, records: Sequence[HospitalRecord]) -> tuple[int, int]:
        """Insert or replace hospitals' master data.

        Returns:
            How many were new and how many replaced.
        """
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "hospital_id": r.hospital_id,
                "name": r.name,
                "aliases": json.dumps(list(r.aliases), ensure_ascii=False),
                "grade": r.grade,
                "region_code": r.region_code,
                "address": r.address,
                "lat": r.lat,
                "lng": r.lng,
                "public_phone": r.public_phone,
                "time_zone": r.time_zone,
                "features": "," + "".join(f"{f}," for f in r.features),
                "notice": r.notice,
                "search_aliases": "\n".join(a.lower() for a in r.aliases),
                "name_initials": r.name_initials,
                "alias_initials": "\n".join(pinyin_initials(a) for a in r.aliases),
                "updated_at": now,
            }
            for r in records
        ]
        if not rows:
            return 0, 0
        async with self.primary.begin() as conn:
            ids = [r["hospital_id"] for r in rows]
            known = set(
                (
                    await conn.execute(
                        sa.select(HOSPITALS.c.hospital_id).where(HOSPITALS.c.hospital_id.in_(ids))
                    )
                ).scalars()
            )
            await conn.execute(upsert(conn, HOSPITALS, ["hospital_id"]), rows)
        self._zones.clear()
        return len(rows) - len(known), len(known)

    async def hospitals(self) -> list[HospitalRecord]:
        """Every hospital's master data, by id."""
        async with self.primary.connect() as conn:
            rows = (
                await conn.execute(sa.select(HOSPITALS).order_by(HOSPITALS.c.hospital_id))
            ).all()
        return [
            HospitalRecord(
                hospital_id=r.hospital_id,
                name=r.name,
                aliases=tuple(json.loads(r.aliases)),
                grade=r.grade,
                region_code=r.region_code,
                address=r.address,
                lat=r.lat,
                lng=r.lng,
                public_phone=r.public_phone,
                time_zone=r.time_zone,
                features=tuple(f for f in r.features.split(",") if f),
                notice=r.notice,
            )
            for r in rows
        ]

    async def hospital_ids(self) -> list[str]:
        """The ids of every hospital in the master data."""
        async with self.primary.connect() as conn:
            return list(
                (
                    await conn.execute(
                        sa.select(HOSPITALS.c.hospital_id).order_by(HOSPITALS.c.hospital_id)
                    )
                ).scalars()
            )

    async def zone(self, hospital_id: str) -> zoneinfo.ZoneInfo:
        """The hospital's time zone (Asia/Shanghai when it has no master data)."""
        zone = self._zones.get(hospital_id)
        if zone is None:
            async with self.primary.connect() as conn:
                name = (
                    await conn.execute(
                        sa.select(HOSPITALS.c.time_zone).where(
                            HOSPITALS.c.hospital_id == hospital_id
                        )
                    )
                ).scalar()
            zone = self._zones[hospital_id] = zoneinfo.ZoneInfo(name or _DEFAULT_ZONE)
        return zone

    # -- sync -------------------------------------------------------------------------------

    async def watermark(
        self, hospital_id: str, kinds: Sequence[int]
    ) -> tuple[str, dt.datetime | None]:
        """The watermark shared by ``kinds`` and the oldest of their ``data_time``.

        The watermark is "" when the kinds' watermarks differ or one never synced.
        """
        async with self.primary.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(SYNC_KINDS.c.watermark, SYNC_KINDS.c.data_time).where(
                        SYNC_KINDS.c.hospital_id == hospital_id, SYNC_KINDS.c.kind.in_(kinds)
                    )
                )
            ).all()
        marks = {r.watermark for r in rows}
        times = [aware(r.data_time) for r in rows if r.data_time is not None]
        mark = marks.pop() if len(rows) == len(kinds) and len(marks) == 1 else ""
        return mark, min(times) if times else None  # type: ignore[type-var]

    async def begin_pass(
        self,
        hospital_id: str,
        kinds: Sequence[int],
        *,
        full: bool = False,
        buckets: tuple[int, frozenset[int]] | None = None,
        saved: tuple[str, dt.datetime | None] | None = None,
    ) -> ChangePass:
        """Start a pass of ``GetChanges`` for ``kinds``: its ``since`` is `ChangePass.since`.

        Args:
            hospital_id: the hospital.
            kinds: the entity kinds of the pass (they share one watermark).
            full: ask for a full snapshot whatever the saved watermark.
            buckets: ``(bucket_count, buckets)`` for a snapshot of some buckets only.
            saved: the watermark and data time the caller knows were saved last (by its
                own previous pass, `ChangePass.saved`), to spare reading them back.
        """
        since, data_time = saved if saved is not None else await self.watermark(hospital_id, kinds)
        if full or buckets is not None:
            since = ""
        return ChangePass(
            self.primary,
            hospital_id,
            tuple(kinds),
            since=since,
            zone=await self.zone(hospital_id),
            buckets=buckets,
            last_data_time=data_time,
        )

    async def record_failure(self, hospital_id: str, kinds: Sequence[int], error: str) -> None:
        """Note a failed pass (the watermark stays where the last success left it)."""
        now = dt.datetime.now(dt.UTC)
        async with self.primary.begin() as conn:
            for kind in kinds:
                stmt = insert_for(conn, SYNC_KINDS).on_conflict_do_update(
                    index_elements=["hospital_id", "kind"],
                    set_={
                        "last_attempt": now,
                        "last_error": error[:1000],
                        "last_error_at": now,
                        "failures": SYNC_KINDS.c.failures + 1,
                    },
                )
                await conn.execute(
                    stmt,
                    [{"hospital_id": hospital_id, "kind": kind, "last_attempt": now,
                      "last_error": error[:1000], "last_error_at": now, "failures": 1}],
                )  # fmt: skip

    async def flag(self, hospital_id: str, message: str) -> None:
        """Record a contract violation of the hospital's feed."""
        async with self.primary.begin() as conn:
            await set_flag(conn, hospital_id, message, dt.datetime.now(dt.UTC))

    async def set_offline(self, hospital_id: str, offline: bool) -> None:
        """Mark the hospital's tunnel down (keeping the first time it was seen down) or up."""
        now = dt.datetime.now(dt.UTC)
        async with self.primary.begin() as conn:
            if offline:
                stmt = insert_for(conn, SYNC_HOSPITALS).on_conflict_do_update(
                    index_elements=["hospital_id"],
                    set_={"offline_since": sa.func.coalesce(SYNC_HOSPITALS.c.offline_since, now)},
                )
                await conn.execute(stmt, [{"hospital_id": hospital_id, "offline_since": now}])
            else:
                await conn.execute(
                    SYNC_HOSPITALS.update()
                    .where(SYNC_HOSPITALS.c.hospital_id == hospital_id)
                    .values(offline_since=None)
                )

    async def acquire_lease(self, hospital_id: str, owner: str, ttl: float) -> bool:
        """Take or renew the right to sync a hospital, so two nodes never sync it at once.

        Returns:
            True when ``owner`` holds the lease until now + ``ttl``.
        """
        now = dt.datetime.now(dt.UTC)
        until = now + dt.timedelta(seconds=ttl)
        async with self.primary.begin() as conn:
            await conn.execute(
                insert_for(conn, SYNC_HOSPITALS).on_conflict_do_nothing(
                    index_elements=["hospital_id"]
                ),
                [{"hospital_id": hospital_id}],
            )
            taken = await conn.execute(
                SYNC_HOSPITALS.update()
                .where(
                    SYNC_HOSPITALS.c.hospital_id == hospital_id,
                    sa.or_(
                        SYNC_HOSPITALS.c.lease_owner.is_(None),
                        SYNC_HOSPITALS.c.lease_owner == owner,
                        SYNC_HOSPITALS.c.lease_until < now,
                    ),
                )
                .values(lease_owner=owner, lease_until=until)
            )
        return bool(taken.rowcount)

    async def release_leases(self, owner: str) -> None:
        """Give up every lease ``owner`` holds (a node shutting down hands its hospitals on)."""
        async with self.primary.begin() as conn:
            await conn.execute(
                SYNC_HOSPITALS.update()
                .where(SYNC_HOSPITALS.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def digests(
        self, hospital_id: str, kinds: Sequence[int], bucket_count: int, scope_start: dt.date
    ) -> dict[int, tuple[int, list[bytes]]]:
        """The store's digests as ``GetDirectoryDigest`` defines them (`mesh.digest`).

        Returns:
            Per kind: how many entities are in scope and the digest of every bucket.
        """
        out: dict[int, tuple[int, list[bytes]]] = {}
        async with self.primary.connect() as conn:
            for kind in kinds:
                table, id_col = TABLES[kind]
                stmt = sa.select(id_col, table.c.content_digest).where(
                    table.c.hospital_id == hospital_id
                )
                if table is SCHEDULES or table is SLOTS:
                    stmt = stmt.where(table.c.date >= scope_start)
                rows = [(r[0], bytes(r[1])) for r in await conn.execute(stmt)]
                out[kind] = (len(rows), bucket_digests(rows, bucket_count))
        return out

    async def record_drift(self, hospital_id: str, result: str, differing: int) -> None:
        """Note the outcome of a digest comparison."""
        now = dt.datetime.now(dt.UTC)
        async with self.primary.begin() as conn:
            stmt = upsert(conn, SYNC_HOSPITALS, ["hospital_id"],
                          only=["last_drift_check", "drift_result", "drift_buckets"])  # fmt: skip
            await conn.execute(
                stmt,
                [{"hospital_id": hospital_id, "last_drift_check": now,
                  "drift_result": result[:500], "drift_buckets": differing}],
            )  # fmt: skip

    async def prune(self, before: dt.date, *, tombstones_before: dt.datetime) -> int:
        """Age out sessions and slots dated before ``before``, and old tombstones.

        Returns:
            How many rows were deleted.
        """
        async with self.primary.begin() as conn:
            deleted = (await conn.execute(sa.delete(SLOTS).where(SLOTS.c.date < before))).rowcount
            deleted += (
                await conn.execute(sa.delete(SCHEDULES).where(SCHEDULES.c.date < before))
            ).rowcount
            deleted += (
                await conn.execute(
                    sa.delete(TOMBSTONES).where(TOMBSTONES.c.deleted_at < tombstones_before)
                )
            ).rowcount
        return int(deleted)

    async def status(self, hospital_id: str | None = None) -> list[HospitalSyncStatus]:
        """Sync state of every hospital (master data or synced), or of one."""
        async with self.primary.connect() as conn:
            ids_stmt = sa.union(
                sa.select(HOSPITALS.c.hospital_id),
                sa.select(SYNC_HOSPITALS.c.hospital_id),
                sa.select(SYNC_KINDS.c.hospital_id),
            ).subquery()
            ids = sa.select(ids_stmt.c.hospital_id)
            if hospital_id is not None:
                ids = ids.where(ids_stmt.c.hospital_id == hospital_id)
            wanted = sorted((await conn.execute(ids)).scalars())
            names_q = sa.select(HOSPITALS.c.hospital_id, HOSPITALS.c.name)
            hosp_q = sa.select(SYNC_HOSPITALS)
            kinds_q = sa.select(SYNC_KINDS)
            if hospital_id is not None:
                names_q = names_q.where(HOSPITALS.c.hospital_id == hospital_id)
                hosp_q = hosp_q.where(SYNC_HOSPITALS.c.hospital_id == hospital_id)
                kinds_q = kinds_q.where(SYNC_KINDS.c.hospital_id == hospital_id)
            names = {r[0]: r[1] for r in await conn.execute(names_q)}
            hosp = {r.hospital_id: r for r in (await conn.execute(hosp_q)).all()}
            kinds: dict[str, dict[int, KindStatus]] = {}
            for r in (await conn.execute(kinds_q)).all():
                kinds.setdefault(r.hospital_id, {})[r.kind] = KindStatus(
                    kind=r.kind,
                    watermark=r.watermark,
                    last_attempt=aware(r.last_attempt),
                    last_success=aware(r.last_success),
                    data_time=aware(r.data_time),
                    last_error=r.last_error,
                    last_error_at=aware(r.last_error_at),
                    failures=r.failures,
                    last_changes=r.last_changes,
                    last_snapshot=bool(r.last_snapshot),
                )
        out = []
        for h in wanted:
            s = hosp.get(h)
            out.append(
                HospitalSyncStatus(
                    hospital_id=h,
                    name=names.get(h, ""),
                    kinds=kinds.get(h, {}),
                    lease_owner=s.lease_owner if s else None,
                    lease_until=aware(s.lease_until) if s else None,
                    offline_since=aware(s.offline_since) if s else None,
                    last_drift_check=aware(s.last_drift_check) if s else None,
                    drift_result=s.drift_result if s else "",
                    flag=s.flag if s else "",
                    flagged_at=aware(s.flagged_at) if s else None,
                )
            )
        return out

    async def doctor_departments(self, hospital_id: str) -> dict[str, list[str]]:
        """Departments of each doctor of a hospital (tests and tools)."""
        async with self.primary.connect() as conn:
            rows = await conn.execute(
                sa.select(DOCTOR_DEPARTMENTS.c.doctor_id, DOCTOR_DEPARTMENTS.c.department_id)
                .where(DOCTOR_DEPARTMENTS.c.hospital_id == hospital_id)
                .order_by(DOCTOR_DEPARTMENTS.c.doctor_id, DOCTOR_DEPARTMENTS.c.department_id)
            )
            out: dict[str, list[str]] = {}
            for doctor_id, dep in rows:
                out.setdefault(doctor_id, []).append(dep)
        return out

    async def count(self, hospital_id: str, kind: int) -> int:
        """How many entities of a kind the store holds for a hospital."""
        table, _ = TABLES[kind]
        async with self.primary.connect() as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(sa.func.count()).where(table.c.hospital_id == hospital_id)
                    )
                ).scalar_one()
            )
