"""In-process hospitals for tests and benchmarks of the sync engine: the `HospitalSource` seam.

`SyntheticHospital` holds a seeded directory (departments, doctors, a week of sessions and
their slots) and serves the change feed exactly as the contract describes it: snapshots,
watermarks, pages, deletions, bucket filters and digests (`mesh.digest`). `FakeHospitals`
is a `HospitalSource` over many of them, with faults on command: offline, hanging, garbage
pages. Nothing here talks to the network; the real path is `RouterSource` over tunnels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.type import date_pb2, money_pb2, timeofday_pb2

from cloud.sync._source import Locality, SourceError
from hplus.hospital.v1 import common_pb2, directory_pb2
from mesh.digest import bucket_digests, bucket_of, content_digest

__all__ = ["FakeHospitals", "SyntheticHospital"]

_KINDS = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)
_FIELD: dict[int, str] = {
    directory_pb2.ENTITY_KIND_DEPARTMENT: "department",
    directory_pb2.ENTITY_KIND_DOCTOR: "doctor",
    directory_pb2.ENTITY_KIND_SCHEDULE: "schedule",
    directory_pb2.ENTITY_KIND_SLOT: "slot",
}


@dataclasses.dataclass
class _Entry:
    version: int
    seq: int
    entity: Message | None  # None: deleted
    digest: bytes = b""  # of ``entity`` when put (edit_silently recomputes it)


class SyntheticHospital:
    """A hospital's directory in memory, with a change log.

    Args:
        hospital_id: its id (prefixes every entity id).
        seed: randomness of names and counts.
        doctors: doctors, one morning session each per day.
        days: days of sessions from ``start``.
        slots_per_session: timed slots of 15 minutes per session.
        start: first session date (default: today in ``zone``).
        zone: the hospital's time zone.
    """

    def __init__(
        self,
        hospital_id: str,
        *,
        seed: int = 0,
        doctors: int = 5,
        days: int = 7,
        slots_per_session: int = 16,
        start: dt.date | None = None,
        zone: str = "Asia/Shanghai",
    ) -> None:
        self.hospital_id = hospital_id
        self.zone = zoneinfo.ZoneInfo(zone)
        self.epoch = "e1"
        self._rng = random.Random(seed)
        self._seq = 0
        self._entries: dict[tuple[int, str], _Entry] = {}
        self.start = start or dt.datetime.now(self.zone).date()
        self.data_time = dt.datetime.now(dt.UTC)
        p = hospital_id
        departments = [f"{p}-dep-{i}" for i in range(max(1, doctors // 2))]
        for i, dep in enumerate(departments):
            self.put(directory_pb2.Department(
                department_id=dep, name=f"科室{i}", location=f"门诊楼{i + 1}层",
                bookable=True, display_order=i,
            ))  # fmt: skip
        for d in range(doctors):
            doctor = f"{p}-doc-{d}"
            dep = departments[d % len(departments)]
            self.put(directory_pb2.Doctor(
                doctor_id=doctor, name=f"医生{d}", title=directory_pb2.DOCTOR_TITLE_CHIEF_PHYSICIAN,
                department_ids=[dep], specialty="常见病", bookable=True,
            ))  # fmt: skip
            for day in range(days):
                date = self.start + dt.timedelta(days=day)
                schedule = f"{p}-sch-{d}-{date.isoformat()}"
                self.put(directory_pb2.Schedule(
                    schedule_id=schedule, department_id=dep, doctor_id=doctor,
                    clinic_type=directory_pb2.CLINIC_TYPE_EXPERT,
                    date=date_pb2.Date(year=date.year, month=date.month, day=date.day),
                    period=common_pb2.SESSION_PERIOD_MORNING,
                    start_time=timeofday_pb2.TimeOfDay(hours=8),
                    end_time=timeofday_pb2.TimeOfDay(hours=12),
                    fee=common_pb2.FeeSummary(
                        total_amount=money_pb2.Money(currency_code="CNY", units=50),
                        cash_amount=money_pb2.Money(currency_code="CNY", units=50),
                    ),
                    status=directory_pb2.SCHEDULE_STATUS_OPEN,
                    slot_mode=directory_pb2.SLOT_MODE_TIMED,
                    capacity=slots_per_session * 2, remaining=slots_per_session * 2,
                ))  # fmt: skip
                first = dt.datetime.combine(date, dt.time(8), self.zone)
                for n in range(slots_per_session):
                    begin = first + dt.timedelta(minutes=15 * n)
                    remaining = self._rng.randint(0, 2)
                    self.put(directory_pb2.Slot(
                        slot_id=f"{schedule}-{n}", schedule_id=schedule,
                        start_time=_stamp(begin), end_time=_stamp(begin + dt.timedelta(minutes=15)),
                        status=directory_pb2.SLOT_STATUS_FREE if remaining
                        else directory_pb2.SLOT_STATUS_BUSY,
                        capacity=2, remaining=remaining,
                    ))  # fmt: skip

    # -- changing the directory -------------------------------------------------------------

    def put(self, entity: Message) -> None:
        """Add or replace an entity (its version goes up)."""
        kind = _kind_of(entity)
        entity_id = _id_of(entity)
        self._seq += 1
        old = self._entries.get((kind, entity_id))
        version = (old.version if old else 0) + 1
        self._entries[(kind, entity_id)] = _Entry(
            version, self._seq, entity, content_digest(entity)
        )
        self.data_time = dt.datetime.now(dt.UTC)

    def delete(self, kind: int, entity_id: str) -> None:
        """Delete an entity (a deletion change with a higher version)."""
        old = self._entries[(kind, entity_id)]
        self._seq += 1
        self._entries[(kind, entity_id)] = _Entry(old.version + 1, self._seq, None)

    def get(self, kind: int, entity_id: str) -> Message | None:
        """A copy of an entity's current state (``None`` if deleted or unknown)."""
        entry = self._entries.get((kind, entity_id))
        if entry is None or entry.entity is None:
            return None
        copy = type(entry.entity)()
        copy.CopyFrom(entry.entity)
        return copy

    def ids(self, kind: int) -> list[str]:
        """Ids of the live entities of a kind."""
        return sorted(i for (k, i), e in self._entries.items() if k == kind and e.entity)

    def book(self, count: int) -> list[str]:
        """Take one place in ``count`` random free slots; returns their ids."""
        free = [i for i in self.ids(directory_pb2.ENTITY_KIND_SLOT) if self._slot(i).remaining > 0]
        chosen = self._rng.sample(free, min(count, len(free)))
        for slot_id in chosen:
            slot = self._slot(slot_id)
            slot.remaining -= 1
            if slot.remaining == 0:
                slot.status = directory_pb2.SLOT_STATUS_BUSY
            self.put(slot)
        return chosen

    def edit_silently(self, kind: int, entity_id: str, **fields: object) -> None:
        """Change an entity without a change-log entry (an HIS edit the feed missed)."""
        entry = self._entries[(kind, entity_id)]
        assert entry.entity is not None
        for name, value in fields.items():
            setattr(entry.entity, name, value)
        entry.digest = content_digest(entry.entity)

    def reset(self) -> None:
        """Forget the change log (a reinstalled edge): old watermarks get a snapshot."""
        self.epoch = f"e{int(self.epoch[1:]) + 1}"

    def _slot(self, slot_id: str) -> directory_pb2.Slot:
        entity = self.get(directory_pb2.ENTITY_KIND_SLOT, slot_id)
        assert isinstance(entity, directory_pb2.Slot)
        return entity

    # -- the feed ---------------------------------------------------------------------------

    def get_changes(
        self, request: directory_pb2.GetChangesRequest
    ) -> directory_pb2.GetChangesResponse:
        """Serve one page as ``DirectoryService/GetChanges`` does."""
        kinds = set(request.kinds) or set(_KINDS)
        upto, offset = self._seq, 0
        if request.page_token:
            upto_text, offset_text = request.page_token.split(":")
            upto, offset = int(upto_text), int(offset_text)
        since = -1
        if request.since:
            epoch, _, seq = request.since.partition(":")
            since = int(seq) if epoch == self.epoch else -1
        snapshot = since < 0
        wanted = None
        if request.HasField("buckets"):
            wanted = (request.buckets.bucket_count, set(request.buckets.buckets))
        changes = []
        for (kind, entity_id), entry in sorted(self._entries.items(), key=lambda x: x[1].seq):
            if kind not in kinds or entry.seq > upto:
                continue
            if wanted and bucket_of(entity_id, wanted[0]) not in wanted[1]:
                continue
            if snapshot and entry.entity is None:
                continue
            if not snapshot and entry.seq <= since:
                continue
            changes.append(self._change(kind, entity_id, entry))
        size = min(request.page_size or 500, 5000)
        chunk = changes[offset : offset + size]
        more = offset + size < len(changes)
        return directory_pb2.GetChangesResponse(
            changes=chunk,
            next_page_token=f"{upto}:{offset + size}" if more else "",
            watermark="" if more else f"{self.epoch}:{upto}",
            snapshot=snapshot,
            data_time=_stamp(self.data_time),
        )

    def _change(self, kind: int, entity_id: str, entry: _Entry) -> directory_pb2.EntityChange:
        change = directory_pb2.EntityChange(kind=kind, entity_id=entity_id, version=entry.version)  # type: ignore[arg-type]
        if entry.entity is None:
            change.deleted = True
            return change
        change.content_digest = entry.digest
        getattr(change, _FIELD[kind]).CopyFrom(entry.entity)
        getattr(change, _FIELD[kind]).version = entry.version
        return change

    def get_digest(
        self, request: directory_pb2.GetDirectoryDigestRequest
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """Serve ``DirectoryService/GetDirectoryDigest``."""
        count = min(request.bucket_count or 64, 4096)
        kinds = list(request.kinds) or list(_KINDS)
        out = directory_pb2.GetDirectoryDigestResponse(
            bucket_count=count,
            scope_start_date=date_pb2.Date(
                year=self.start.year, month=self.start.month, day=self.start.day
            ),
            data_time=_stamp(self.data_time),
        )
        for kind in kinds:
            entries = [
                (i, e.digest)
                for (k, i), e in self._entries.items()
                if k == kind and e.entity is not None
            ]
            out.kinds.append(
                directory_pb2.KindDigest(
                    kind=kind, count=len(entries), bucket_digests=bucket_digests(entries, count)
                )
            )
        return out


class FakeHospitals:
    """A `HospitalSource` over in-memory hospitals, with faults on command.

    Args:
        hospitals: the hospitals, all connected ("local") unless told otherwise.
    """

    def __init__(self, hospitals: Iterable[SyntheticHospital]) -> None:
        self.hospitals = {h.hospital_id: h for h in hospitals}
        self.offline: set[str] = set()
        """Hospitals whose tunnel is down."""
        self.remote: set[str] = set()
        """Hospitals whose tunnel is on another node."""
        self.hanging: set[str] = set()
        """Hospitals whose calls never answer (until removed from this set)."""
        self.garbage: set[str] = set()
        """Hospitals whose pages carry an invalid change."""
        self.calls: dict[str, int] = {}
        """Calls per hospital."""
        self.requests: list[tuple[str, directory_pb2.GetChangesRequest]] = []
        """Every GetChanges request, in order."""
        self.on_page: Callable[[str, int], Awaitable[None]] | None = None
        """Awaited after each answered page with the hospital and the page's number in the
        pass (1 for the first), to act mid-pass (e.g. cut the database)."""
        self.page_done: asyncio.Event = asyncio.Event()
        """Set after every answered call."""
        self._unhang = asyncio.Event()

    def release(self) -> None:
        """Let hanging calls fail (as a deadline would)."""
        self._unhang.set()

    async def locality(self, hospital_id: str) -> Locality:
        """Local unless offline or remote."""
        if hospital_id in self.offline or hospital_id not in self.hospitals:
            return Locality.OFFLINE
        return Locality.REMOTE if hospital_id in self.remote else Locality.LOCAL

    async def _enter(self, hospital_id: str) -> SyntheticHospital:
        self.calls[hospital_id] = self.calls.get(hospital_id, 0) + 1
        if hospital_id in self.offline or hospital_id not in self.hospitals:
            raise SourceError("UNAVAILABLE", f"hospital {hospital_id} is not connected")
        if hospital_id in self.hanging:
            await self._unhang.wait()
            raise SourceError("DEADLINE_EXCEEDED", "the hospital did not answer")
        return self.hospitals[hospital_id]

    async def get_changes(
        self, hospital_id: str, request: directory_pb2.GetChangesRequest, *, time_limit: float
    ) -> directory_pb2.GetChangesResponse:
        """One page of the hospital's feed."""
        hospital = await self._enter(hospital_id)
        copy = directory_pb2.GetChangesRequest()
        copy.CopyFrom(request)
        self.requests.append((hospital_id, copy))
        page = hospital.get_changes(request)
        if hospital_id in self.garbage and page.changes:
            page.changes[-1].version = 0
        if self.on_page is not None:
            number = 1 + (int(request.page_token.split(":")[1]) // (request.page_size or 500)
                          if request.page_token else 0)  # fmt: skip
            await self.on_page(hospital_id, number)
        self.page_done.set()
        return page

    async def get_digest(
        self,
        hospital_id: str,
        request: directory_pb2.GetDirectoryDigestRequest,
        *,
        time_limit: float,
    ) -> directory_pb2.GetDirectoryDigestResponse:
        """The hospital's digests."""
        hospital = await self._enter(hospital_id)
        return hospital.get_digest(request)


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def _kind_of(entity: Message) -> int:
    for kind, field in _FIELD.items():
        if entity.DESCRIPTOR.name.lower() == field:
            return kind
    raise TypeError(f"not a directory entity: {entity.DESCRIPTOR.full_name}")


def _id_of(entity: Message) -> str:
    return str(getattr(entity, f"{_FIELD[_kind_of(entity)]}_id"))
