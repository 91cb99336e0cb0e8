"""One simulated hospital's directory, in a few kilobytes, served as a change-feed source.

Nothing is stored per entity but what changes: a version, a slot's remaining places and a
schedule's suspension, in flat arrays. Everything else (names, times, fees, ids) follows
from the hospital's seed and the entity's index and is built when asked, so thousands of
hospitals fit in one process.

:class:`MemoryHis` is a :class:`frontend_server.directory.FeedSource`, so the fleet's edges
serve ``GetChanges`` and ``GetDirectoryDigest`` through the same protocol code as a real
edge. Versions are microseconds of the wall clock, strictly increasing; a short history of
superseded values lets a pass read the directory as of the position it began at.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import functools
import random
import secrets
import time
import zoneinfo
from array import array
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NamedTuple

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from frontend_server.directory import FeedEntry, FeedQuery
from hplus.hospital.v1 import common_pb2, directory_pb2
from mesh.digest import content_digest

__all__ = ["DEPARTMENTS", "DirectoryShape", "MemoryHis"]

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")
DEPT: int = directory_pb2.ENTITY_KIND_DEPARTMENT
DOCTOR: int = directory_pb2.ENTITY_KIND_DOCTOR
SCHEDULE: int = directory_pb2.ENTITY_KIND_SCHEDULE
SLOT: int = directory_pb2.ENTITY_KIND_SLOT
DEPARTMENTS = (
    ("0101", "心血管内科", "门诊楼2楼A区"),
    ("0102", "消化内科", "门诊楼2楼B区"),
    ("0201", "普通外科", "门诊楼3楼A区"),
    ("0300", "儿科", "门诊楼1楼"),
    ("0401", "妇科", "门诊楼4楼"),
    ("0500", "眼科", "门诊楼5楼"),
)
"""(id, name, location) of every simulated hospital's departments."""
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文博宇浩然欣怡"
_TITLES = (
    (directory_pb2.DOCTOR_TITLE_CHIEF_PHYSICIAN, "主任医师", 5000),
    (directory_pb2.DOCTOR_TITLE_ASSOCIATE_CHIEF_PHYSICIAN, "副主任医师", 3000),
    (directory_pb2.DOCTOR_TITLE_ATTENDING_PHYSICIAN, "主治医师", 1500),
    (directory_pb2.DOCTOR_TITLE_RESIDENT_PHYSICIAN, "住院医师", 1000),
)
_PERIODS = (
    (common_pb2.SESSION_PERIOD_MORNING, dt.time(8, 0), 240, "A"),
    (common_pb2.SESSION_PERIOD_AFTERNOON, dt.time(13, 30), 240, "P"),
)
_ONEOF: dict[int, str] = {DEPT: "department", DOCTOR: "doctor", SCHEDULE: "schedule", SLOT: "slot"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectoryShape:
    """The size of every simulated hospital's directory."""

    doctors: int = 5
    """Doctors at start (each holds a morning and an afternoon session every day)."""
    days: int = 7
    """Days of sessions from the first day on."""
    slots: int = 10
    """Timed slots per session."""
    capacity: int = 3
    """Places per slot."""

    def __post_init__(self) -> None:
        if not 1 <= self.doctors <= 5000:
            raise ValueError("doctors must be in [1, 5000]")
        if not 1 <= self.days <= 60:
            raise ValueError("days must be in [1, 60]")
        if not 1 <= self.slots <= 48:
            raise ValueError("slots must be in [1, 48]")
        if not 1 <= self.capacity <= 255:
            raise ValueError("capacity must be in [1, 255]")


class _Day(NamedTuple):
    date: dt.date
    text: str
    midnight: int


@functools.lru_cache(maxsize=4096)
def _calendar(first_day: dt.date, day: int) -> _Day:
    """Day ``day`` after ``first_day``: date, id text, local midnight in epoch seconds.

    Cached: every hospital of the fleet shares the same few days.
    """
    date = first_day + dt.timedelta(days=day)
    midnight = int(dt.datetime.combine(date, dt.time(), ZONE).timestamp())
    return _Day(date, f"{date:%Y%m%d}", midnight)


class _Old(NamedTuple):
    version: int
    value: int


_Overrides = dict[int, _Old]


def _stamp(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


class MemoryHis:
    """One simulated hospital's directory (see the module docstring).

    Args:
        seed: the hospital's seed (same seed, same names and starting availability).
        shape: the directory's size.
        first_day: the date of the first day of sessions (hospital local).
        clock: wall clock in epoch seconds.
        history: changes kept for passes in progress (and at most this many seconds).
    """

    def __init__(
        self,
        seed: int,
        shape: DirectoryShape,
        *,
        first_day: dt.date,
        clock: Callable[[], float] = time.time,
        history: int = 512,
        history_seconds: float = 300.0,
    ) -> None:
        self.seed = seed
        self.shape = shape
        self.first_day = first_day
        self._clock = clock
        self.store_id = secrets.token_hex(6)
        d, n = len(DEPARTMENTS), shape.doctors
        self._schedules = n * shape.days * 2
        self._slots = self._schedules * shape.slots
        self._base = (0, d, d + n, d + n + self._schedules, d + n + self._schedules + self._slots)
        start = int(clock() * 1_000_000)
        self._versions = array("q", [start]) * self._base[4]
        self._added = array("q")  # versions of doctors added since the start
        self._suspended = bytearray(self._schedules)
        rng = random.Random(seed)
        self._remaining = bytearray(
            max(0, shape.capacity - rng.choice((0, 0, 0, 1, 2, shape.capacity)))
            for _ in range(self._slots)
        )
        self._history: collections.deque[tuple[int, int, int, int]] = collections.deque()
        self._history_max = history
        self._history_us = int(history_seconds * 1_000_000)
        self._history_floor = 0
        self.head = start
        self.changes_applied = 0

    # -- FeedSource --------------------------------------------------------------------

    @property
    def horizon(self) -> int:
        """Nothing is ever pruned that a watermark needs (no deletions)."""
        return 0

    @property
    def data_time(self) -> dt.datetime:
        """An in-memory HIS is always current."""
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def today(self) -> dt.date:
        """The hospital's current date."""
        return dt.datetime.fromtimestamp(self._clock(), ZONE).date()

    # -- ids and indices -----------------------------------------------------------------

    def _doctor_count(self) -> int:
        return self.shape.doctors + len(self._added)

    def _schedule_of(self, j: int) -> tuple[int, int, int]:
        """(day, doctor, period) of schedule ``j``."""
        day, rest = divmod(j, self.shape.doctors * 2)
        doctor, period = divmod(rest, 2)
        return day, doctor, period

    def _schedule_id(self, j: int) -> str:
        day, doctor, period = self._schedule_of(j)
        return f"S{_calendar(self.first_day, day).text}-{doctor:04d}{_PERIODS[period][3]}"

    def _ids(self, kind: int) -> Iterator[tuple[str, int]]:
        """(id, global index) of every entity of ``kind``, in id order."""
        base = self._base
        if kind == DEPT:
            for i, (dept_id, _, _) in enumerate(DEPARTMENTS):
                yield dept_id, i
        elif kind == DOCTOR:
            for k in range(self._doctor_count()):
                yield f"D{k:04d}", base[1] + k if k < self.shape.doctors else -1 - k
        elif kind == SCHEDULE:
            for j in range(self._schedules):
                yield self._schedule_id(j), base[2] + j
        else:
            per = self.shape.slots
            for j in range(self._schedules):
                sid = self._schedule_id(j)
                for n in range(per):
                    yield f"{sid}-{n:02d}", base[3] + j * per + n

    def _day(self, kind: int, index: int) -> dt.date | None:
        if kind == SCHEDULE:
            return _calendar(self.first_day, self._schedule_of(index - self._base[2])[0]).date
        if kind == SLOT:
            j = (index - self._base[3]) // self.shape.slots
            return _calendar(self.first_day, self._schedule_of(j)[0]).date
        return None

    # -- state, now or as of a position ------------------------------------------------

    def _version(self, index: int, view: _Overrides) -> int:
        old = view.get(index)
        if old is not None:
            return old.version
        if index < 0:
            return self._added[-1 - index - self.shape.doctors]
        return self._versions[index]

    def _value(self, index: int, view: _Overrides, current: int) -> int:
        old = view.get(index)
        return current if old is None else old.value

    def _as_of(self, at: int) -> _Overrides:
        """Superseded values to use to read the directory as of position ``at``."""
        out: _Overrides = {}
        if at >= self.head or at < self._history_floor:
            # Current; or a pass older than the history: current values, still at least once.
            return out
        for seq, index, version, value in reversed(self._history):
            if seq <= at:
                break
            out[index] = _Old(version, value)  # the earliest change after `at` wins
        return out

    def _remaining_of(self, m: int, view: _Overrides) -> int:
        index = self._base[3] + m
        return self._value(index, view, self._remaining[m])

    def _suspended_of(self, j: int, view: _Overrides) -> bool:
        index = self._base[2] + j
        return bool(self._value(index, view, self._suspended[j]))

    # -- entities ----------------------------------------------------------------------

    def _entity(self, kind: int, index: int, view: _Overrides) -> Message:
        if kind == DEPT:
            dept_id, name, location = DEPARTMENTS[index]
            return directory_pb2.Department(
                department_id=dept_id, name=name, location=location, bookable=True,
                display_order=index,
            )  # fmt: skip
        if kind == DOCTOR:
            k = index - self._base[1] if index >= 0 else -1 - index
            return self._doctor(k)
        if kind == SCHEDULE:
            return self._schedule(index - self._base[2], view)
        return self._slot(index - self._base[3], view)

    def _doctor(self, k: int) -> directory_pb2.Doctor:
        s = self.seed
        title, title_text, _ = _TITLES[(s + k) % len(_TITLES)]
        name = (
            _SURNAMES[(s * 7 + k * 13) % len(_SURNAMES)]
            + _GIVEN[(s * 3 + k * 11) % len(_GIVEN)]
            + _GIVEN[(s + k * 5) % len(_GIVEN)]
        )
        dept = DEPARTMENTS[k % len(DEPARTMENTS)]
        return directory_pb2.Doctor(
            doctor_id=f"D{k:04d}",
            name=name,
            title=title,
            title_text=title_text,
            department_ids=[dept[0]],
            gender=common_pb2.GENDER_MALE if (s + k) % 2 else common_pb2.GENDER_FEMALE,
            specialty=f"{dept[1]}常见病、多发病",
            bookable=True,
        )

    def _schedule(self, j: int, view: _Overrides) -> directory_pb2.Schedule:
        day, k, period = self._schedule_of(j)
        date = self.first_day + dt.timedelta(days=day)
        code, start, minutes, _ = _PERIODS[period]
        end = (dt.datetime.combine(date, start) + dt.timedelta(minutes=minutes)).time()
        per = self.shape.slots
        remaining = sum(self._remaining_of(j * per + n, view) for n in range(per))
        suspended = self._suspended_of(j, view)
        if suspended:
            status = directory_pb2.SCHEDULE_STATUS_SUSPENDED
        elif remaining == 0:
            status = directory_pb2.SCHEDULE_STATUS_FULL
        else:
            status = directory_pb2.SCHEDULE_STATUS_OPEN
        fee = _TITLES[(self.seed + k) % len(_TITLES)][2]
        out = directory_pb2.Schedule(
            schedule_id=self._schedule_id(j),
            department_id=DEPARTMENTS[k % len(DEPARTMENTS)][0],
            doctor_id=f"D{k:04d}",
            clinic_type=directory_pb2.CLINIC_TYPE_EXPERT,
            period=code,
            location=f"{DEPARTMENTS[k % len(DEPARTMENTS)][2]} {k % 9 + 1}诊室",
            status=status,
            slot_mode=directory_pb2.SLOT_MODE_TIMED,
            capacity=per * self.shape.capacity,
            remaining=remaining,
            suspend_reason="医生临时停诊" if suspended else "",
        )
        out.date.year, out.date.month, out.date.day = date.year, date.month, date.day
        out.start_time.hours, out.start_time.minutes = start.hour, start.minute
        out.end_time.hours, out.end_time.minutes = end.hour, end.minute
        out.fee.total_amount.currency_code = "CNY"
        out.fee.total_amount.units, out.fee.total_amount.nanos = divmod(fee, 100)
        out.fee.total_amount.nanos *= 10_000_000
        out.fee.cash_amount.CopyFrom(out.fee.total_amount)
        return out

    def _slot(self, m: int, view: _Overrides) -> directory_pb2.Slot:
        per = self.shape.slots
        j, n = divmod(m, per)
        day, _, period = self._schedule_of(j)
        _, start, minutes, _ = _PERIODS[period]
        length = minutes * 60 // per
        begin = _calendar(self.first_day, day).midnight + start.hour * 3600 + start.minute * 60
        begin += n * length
        schedule_id = self._schedule_id(j)
        remaining = self._remaining_of(m, view)
        if self._suspended_of(j, view):
            status = directory_pb2.SLOT_STATUS_BUSY_UNAVAILABLE
        elif remaining:
            status = directory_pb2.SLOT_STATUS_FREE
        else:
            status = directory_pb2.SLOT_STATUS_BUSY
        out = directory_pb2.Slot(
            slot_id=f"{schedule_id}-{n:02d}",
            schedule_id=schedule_id,
            status=status,
            capacity=self.shape.capacity,
            remaining=remaining,
        )
        out.start_time.seconds = begin
        out.end_time.seconds = begin + length
        return out

    def _change(self, kind: int, entity_id: str, index: int, view: _Overrides) -> FeedEntry:
        version = self._version(index, view)
        entity = self._entity(kind, index, view)
        digest = content_digest(entity)
        stamp = _stamp(version)
        entity.version = version  # type: ignore[attr-defined]
        entity.update_time.CopyFrom(stamp)  # type: ignore[attr-defined]
        change = directory_pb2.EntityChange(
            kind=kind,  # type: ignore[arg-type]
            entity_id=entity_id,
            version=version,
            change_time=stamp,
            content_digest=digest,
        )
        getattr(change, _ONEOF[kind]).CopyFrom(entity)
        return FeedEntry(kind, entity_id, version, change.SerializeToString())

    def _in_scope(self, kind: int, index: int, query: FeedQuery, entity_id: str) -> bool:
        if kind not in query.kinds:
            return False
        if query.buckets is not None and entity_id not in query.buckets:
            return False
        day = self._day(kind, index)
        return day is None or day >= query.scope_start

    async def snapshot(
        self, *, at: int, after: tuple[int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """The entities as of ``at`` in (kind, id) order, after ``after``."""
        view = self._as_of(at)
        for kind in (DEPT, DOCTOR, SCHEDULE, SLOT):
            if kind not in query.kinds or (after is not None and kind < after[0]):
                continue
            for entity_id, index in self._ids(kind):
                if after is not None and (kind, entity_id) <= after:
                    continue
                if self._version(index, view) == 0:
                    continue  # added after `at`
                if self._in_scope(kind, index, query, entity_id):
                    yield self._change(kind, entity_id, index, view)

    async def changes(
        self, *, since: int, at: int, after: tuple[int, int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """Entities changed in (``since``, ``at``] as of ``at``, in (seq, kind, id) order."""
        view = self._as_of(at)
        found: list[tuple[int, int, str, int]] = []
        for kind in (DEPT, DOCTOR, SCHEDULE, SLOT):
            if kind not in query.kinds:
                continue
            for entity_id, index in self._ids(kind):
                version = self._version(index, view)
                if since < version <= at and self._in_scope(kind, index, query, entity_id):
                    found.append((version, kind, entity_id, index))
        found.sort()
        start = 0 if after is None else bisect.bisect_right(found, after, key=lambda f: f[:3])
        for version, kind, entity_id, index in found[start:]:
            del version
            yield self._change(kind, entity_id, index, view)

    async def digest_entries(self, kind: int, scope_start: dt.date) -> list[tuple[str, bytes]]:
        """(id, content digest) of the current entities of ``kind`` in scope."""
        out = []
        for entity_id, index in self._ids(kind):
            day = self._day(kind, index)
            if day is None or day >= scope_start:
                out.append((entity_id, content_digest(self._entity(kind, index, {}))))
        return out

    # -- current reads (List*) ---------------------------------------------------------

    def departments(self) -> list[directory_pb2.Department]:
        """Every department, in display order."""
        return [self._entity(DEPT, i, {}) for i in range(len(DEPARTMENTS))]  # type: ignore[misc]

    def doctors(self) -> list[directory_pb2.Doctor]:
        """Every doctor, by id."""
        return [self._doctor(k) for k in range(self._doctor_count())]

    def schedules(self, start: dt.date, end: dt.date) -> list[directory_pb2.Schedule]:
        """Sessions dated in [start, end], by date, doctor and period."""
        out = []
        for j in range(self._schedules):
            date = self.first_day + dt.timedelta(days=self._schedule_of(j)[0])
            if start <= date <= end:
                out.append(self._schedule(j, {}))
        return out

    def slots_of(self, schedule_id: str) -> list[directory_pb2.Slot] | None:
        """The slots of a session, or None when there is no such session."""
        per = self.shape.slots
        for j in range(self._schedules):
            if self._schedule_id(j) == schedule_id:
                return [self._slot(j * per + n, {}) for n in range(per)]
        return None

    # -- changes -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.head = max(int(self._clock() * 1_000_000), self.head + 1)
        return self.head

    def _record(self, seq: int, index: int, value: int, version: int | None = None) -> None:
        """Keeps the superseded version and value of ``index`` for passes in progress."""
        old = self._version(index, {}) if version is None else version
        self._history.append((seq, index, old, value))
        cut = seq - self._history_us
        while self._history and (
            len(self._history) > self._history_max or self._history[0][0] < cut
        ):
            self._history_floor = self._history.popleft()[0]

    def _bump(self, index: int, seq: int) -> None:
        if index < 0:
            self._added[-1 - index - self.shape.doctors] = seq
        else:
            self._versions[index] = seq

    def change(self, rng: random.Random) -> None:
        """Applies one random change.

        Mostly a slot booked or cancelled, sometimes a session suspended or resumed, rarely
        a doctor added.
        """
        roll = rng.random()
        today = self.today()
        first = max(0, (today - self.first_day).days)
        if first >= self.shape.days:
            return  # every simulated day has passed
        per_day = self.shape.doctors * 2
        j = rng.randrange(first * per_day, self._schedules)
        if roll < 0.9:
            m = j * self.shape.slots + rng.randrange(self.shape.slots)
            old = self._remaining[m]
            booked = old == self.shape.capacity or (old > 0 and rng.random() < 0.7)
            self.set_remaining(m, old - 1 if booked else old + 1)
        elif roll < 0.98:
            self.set_suspended(j, not self._suspended[j])
        else:
            self.add_doctor()

    def set_remaining(self, m: int, remaining: int) -> None:
        """Sets slot ``m``'s remaining places (its session changes with it)."""
        seq = self._next_seq()
        slot_index = self._base[3] + m
        schedule_index = self._base[2] + m // self.shape.slots
        self._record(seq, slot_index, self._remaining[m])
        self._record(seq, schedule_index, self._suspended[m // self.shape.slots])
        self._remaining[m] = remaining
        self._bump(slot_index, seq)
        self._bump(schedule_index, seq)
        self.changes_applied += 1

    def set_suspended(self, j: int, suspended: bool) -> None:
        """Suspends (停诊) or resumes session ``j``; its slots' availability changes too."""
        seq = self._next_seq()
        schedule_index = self._base[2] + j
        self._record(seq, schedule_index, self._suspended[j])
        per = self.shape.slots
        for n in range(per):
            slot_index = self._base[3] + j * per + n
            self._record(seq, slot_index, self._remaining[j * per + n])
            self._bump(slot_index, seq)
        self._suspended[j] = int(suspended)
        self._bump(schedule_index, seq)
        self.changes_applied += 1

    def add_doctor(self) -> str:
        """Adds a doctor (without sessions); returns the new id."""
        if self._doctor_count() >= 9999:
            return ""
        seq = self._next_seq()
        k = self._doctor_count()
        self._record(seq, -1 - k, 0, version=0)  # version 0: did not exist before
        self._added.append(seq)
        self.changes_applied += 1
        return f"D{k:04d}"

    def schedule_index(self, schedule_id: str) -> int | None:
        """The index of a session by id (for tests and the control API)."""
        for j in range(self._schedules):
            if self._schedule_id(j) == schedule_id:
                return j
        return None

    def slot_index(self, slot_id: str) -> int | None:
        """The index of a slot by id (for tests and the control API)."""
        schedule_id, _, number = slot_id.rpartition("-")
        j = self.schedule_index(schedule_id)
        if j is None or not number.isdigit() or int(number) >= self.shape.slots:
            return None
        return j * self.shape.slots + int(number)
