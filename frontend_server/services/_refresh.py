"""Keeps the edge's directory mirror fresh: reads the HIS in the background, and on demand.

The change feed is served from the mirror (:mod:`frontend_server.directory`), never from the
HIS in the request path. This refresher fills it:

* **full reads** list departments, doctors and the schedules from today, and read the slots
  of that whole range in one call where the HIS has a bulk read (``bulk_slots``), else one
  call per schedule. Entities of a full read that the HIS no longer lists are deleted.
* A HIS with its own change feed (``incremental_changes``) is read incrementally between
  full reads: the first read is the HIS's own full dump (which carries its watermark), then
  only what changed after the watermark the mirror keeps. Full reads still come every
  ``full_refresh_seconds``, for what such feeds miss (states that change with time, and
  deletions some HIS never log).
* Reads go through the hospital's paced adapter, so they count against ``his.limits`` with
  the real-time calls; one refresh runs at a time, and a caller who asks for a fresh mirror
  joins the refresh in flight. A slow read (a HIS without the bulk read: one call per
  schedule) spaces the next ones out, so the mirror keeps the HIS busy at most a tenth of
  the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
import zoneinfo
from collections.abc import Iterable, Sequence

from frontend_server.adapters import (
    Department,
    Doctor,
    HisAdapter,
    HisCapabilityError,
    HisError,
    HisProtocolError,
    HisRejected,
    HisUnavailable,
    RejectReason,
    Schedule,
    Slot,
)
from frontend_server.directory import (
    ENTITY_KINDS,
    DirectoryMirror,
    FeedLimits,
    MirrorEntity,
    MirrorUpdate,
)
from frontend_server.services import _convert as convert
from frontend_server.services._rules import Clock, utc_now
from hplus.hospital.v1 import directory_pb2

__all__ = ["DirectoryConfig", "DirectoryRefresher"]

log = logging.getLogger("frontend_server.directory")

_DELETED_KINDS = {
    "SCHEDULE": directory_pb2.ENTITY_KIND_SCHEDULE,
    "SLOT": directory_pb2.ENTITY_KIND_SLOT,
}
_UNSUPPORTED = frozenset({RejectReason.NOT_FOUND, RejectReason.INVALID_ARGUMENT})
_BULK_RETRY = dt.timedelta(hours=1)
_DUTY = 10  # a refresh that took T seconds is followed by at least 10 T of rest
_SLICE = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectoryConfig:
    """How the edge keeps its directory mirror and serves the change feed from it."""

    refresh_seconds: float = 30.0
    """Pause between background reads of the HIS (incremental where the HIS can); at
    least ten times the last read's duration."""
    full_refresh_seconds: float = 600.0
    """Longest time between full reads of the HIS."""
    max_staleness_seconds: float = 10.0
    """A feed pass that starts on an older mirror first asks for a refresh …"""
    wait_seconds: float = 3.0
    """… and waits this long for it (then serves the mirror as it is; ``data_time`` says
    how old it is). Also how long a pass waits for the very first read."""
    history_seconds: float = 900.0
    """How long superseded states are kept, so a pass reads one point in time."""
    tombstone_seconds: float = 7 * 86400.0
    """How long deletions are kept; older watermarks get a snapshot."""
    max_entities: int = 500_000
    """Largest directory accepted from the HIS."""
    limits: FeedLimits = dataclasses.field(default_factory=FeedLimits)
    """Bounds of a feed page (entries, bytes, assembly time)."""

    def __post_init__(self) -> None:
        for name in ("refresh_seconds", "full_refresh_seconds", "history_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_staleness_seconds", "wait_seconds", "tombstone_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_entities < 1:
            raise ValueError("max_entities must be >= 1")


class DirectoryRefresher:
    """Reads the HIS into the mirror (see the module docstring).

    Args:
        mirror: the opened mirror.
        adapter: the hospital's (paced) HIS adapter.
        zone: the hospital's time zone (dates of schedules and slots, today).
        config: intervals and bounds.
        clock: the current time, timezone-aware.
    """

    def __init__(
        self,
        mirror: DirectoryMirror,
        adapter: HisAdapter,
        *,
        zone: zoneinfo.ZoneInfo,
        config: DirectoryConfig | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.mirror = mirror
        self.config = config or DirectoryConfig()
        self._adapter = adapter
        self._zone = zone
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._bulk_retry: dt.datetime | None = None
        self._reported = ""
        self.last_error = ""
        """Why the last refresh failed ("" after a success)."""
        self.refreshes = 0
        """Refreshes that succeeded."""
        self.last_seconds = 0.0
        """How long the last refresh took."""

    def retarget(self, adapter: HisAdapter, zone: zoneinfo.ZoneInfo) -> None:
        """Reads through ``adapter`` in ``zone`` from the next refresh on.

        For a profile applied live: a refresh in flight finishes on the adapter it started
        with.
        """
        self._adapter = adapter
        self._zone = zone

    def today(self) -> dt.date:
        """The hospital's current date."""
        return self._clock().astimezone(self._zone).date()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Refreshes every ``refresh_seconds`` (and when asked) until :meth:`shutdown`."""
        while not self._stop.is_set():
            # Cleared before the read, never after it: a wake (a stale-mirror request, or
            # shutdown) that arrives while the read finishes must not be lost.
            self._wake.clear()
            with contextlib.suppress(Exception):  # reported by _refresh; try again later
                await asyncio.shield(self._start())
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._gap(self.config.refresh_seconds)):
                    await self._wake.wait()

    async def shutdown(self) -> None:
        """Stops the loop and cancels a refresh in flight."""
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _gap(self, seconds: float) -> float:
        """``seconds``, stretched so slow reads keep the HIS busy a tenth of the time."""
        return max(seconds, _DUTY * self.last_seconds)

    def _start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            task = asyncio.get_running_loop().create_task(self._refresh(), name="directory-refresh")
            # A caller may stop waiting (its deadline); the outcome is reported by _refresh.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._task = task
        return self._task

    async def refresh(self) -> None:
        """Reads the HIS now (or joins the read in flight) and waits for it.

        Raises:
            HisError: the HIS could not be read.
            MirrorError: the mirror refused what was read.
        """
        await asyncio.shield(self._start())

    async def ensure_fresh(self) -> None:
        """Before a feed pass: refreshes a stale mirror, waiting a bounded time.

        A mirror older than ``max_staleness_seconds`` is refreshed; the pass waits at most
        ``wait_seconds`` for it.

        Raises:
            HisUnavailable: the mirror has never read the HIS (the reason is the last
                refresh's error), so there is nothing to serve yet.
        """
        data_time = self.mirror.data_time
        age = math.inf if data_time is None else (self._clock() - data_time).total_seconds()
        if age > self._gap(self.config.max_staleness_seconds) and not self._stop.is_set():
            task = self._start()
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(self.config.wait_seconds):
                    await asyncio.shield(task)
        if self.mirror.data_time is None:
            self._wake.set()
            raise HisUnavailable(
                "the directory mirror has not read the HIS yet"
                + (f" ({self.last_error})" if self.last_error else ""),
                operation="get_changes",
                dialect=self._adapter.dialect,
            )

    # -- one refresh -------------------------------------------------------------------

    async def _refresh(self) -> None:
        started = time.monotonic()
        try:
            update = await self._read()
            await self._refuse_emptied(update)
            stats = await self.mirror.apply(update)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.last_error = f"{type(err).__name__}: {err}"
            if await self.mirror.rebuild_if_damaged(err):
                self.last_error = "the mirror file was damaged and has been rebuilt"
            if self.last_error != self._reported:
                self._reported = self.last_error
                if isinstance(err, HisError):
                    log.warning("directory refresh failed: %s", self.last_error)
                else:
                    log.error("directory refresh failed", exc_info=err)
            raise
        finally:
            self.last_seconds = time.monotonic() - started
        self.refreshes += 1
        self.last_error = ""
        if self._reported:
            log.info("directory refresh works again")
            self._reported = ""
        if stats.changed or stats.deleted or stats.aged:
            log.debug(
                "directory: %d changed, %d deleted, %d aged out, %d entities",
                stats.changed,
                stats.deleted,
                stats.aged,
                stats.entities,
            )

    async def _refuse_emptied(self, update: MirrorUpdate) -> None:
        """Refuses a full read that lists nothing of a kind the mirror holds.

        A HIS answering an empty list by mistake (a failed join, a view being rebuilt)
        would otherwise delete that kind from every read store; a real hospital does not
        lose all its departments, doctors or sessions between two reads.

        Raises:
            HisProtocolError: the read lists no entity of a kind the mirror holds.
        """
        for kind in sorted(update.complete):
            if any(e.kind == kind for e in update.entities):
                continue
            held = len(await self.mirror.digest_entries(kind, update.scope_start))
            if held:
                name = directory_pb2.EntityKind.Name(kind)  # type: ignore[arg-type]
                raise HisProtocolError(
                    f"the HIS listed no {name} while the mirror holds {held}: read not "
                    "applied (taken for a HIS fault)",
                    operation="directory_refresh",
                    dialect=self._adapter.dialect,
                )

    async def _read(self) -> MirrorUpdate:
        adapter = self._adapter
        mirror = self.mirror
        today = self.today()
        started = self._clock()
        if adapter.capabilities.incremental_changes:
            full_due = (
                mirror.full_time is None
                or (started - mirror.full_time).total_seconds() >= self.config.full_refresh_seconds
            )
            if mirror.his_watermark is None:
                everything = await adapter.get_changes(None)
                return await self._update(
                    everything.departments,
                    everything.doctors,
                    everything.schedules,
                    everything.slots,
                    complete=frozenset(ENTITY_KINDS),
                    today=today,
                    read_time=started,
                    his_watermark=everything.watermark,
                )
            if not full_due:
                try:
                    delta = await adapter.get_changes(mirror.his_watermark)
                except (ValueError, HisRejected) as err:
                    if isinstance(err, HisRejected) and err.reason not in _UNSUPPORTED:
                        raise
                    log.warning("the HIS refused its own change watermark: reading it in full")
                    await mirror.forget_his_watermark()
                    return await self._read()
                deleted = [
                    (_DELETED_KINDS[d.kind], d.entity_id)
                    for d in delta.deleted
                    if d.kind in _DELETED_KINDS
                ]
                return await self._update(
                    delta.departments,
                    delta.doctors,
                    delta.schedules,
                    delta.slots,
                    deleted=deleted,
                    today=today,
                    read_time=started,
                    his_watermark=delta.watermark or mirror.his_watermark,
                )
        departments = await adapter.list_departments()
        doctors = await adapter.list_doctors()
        schedules = await adapter.list_schedules(start=today)
        slots = await self._slots(today, schedules)
        return await self._update(
            departments,
            doctors,
            schedules,
            slots,
            complete=frozenset(ENTITY_KINDS),
            today=today,
            read_time=started,
        )

    async def _slots(self, today: dt.date, schedules: Sequence[Schedule]) -> list[Slot]:
        adapter = self._adapter
        now = self._clock()
        if adapter.capabilities.bulk_slots and (
            self._bulk_retry is None or now >= self._bulk_retry
        ):
            try:
                return list(await adapter.list_slots_between(start=today))
            except HisCapabilityError:
                pass
            except (HisRejected, HisProtocolError) as err:
                if isinstance(err, HisRejected) and err.reason not in _UNSUPPORTED:
                    raise
                # Most likely a release of the vendor's HIS without the bulk read: read per
                # schedule, and try the bulk read again later (the HIS may be upgraded).
                log.warning(
                    "the HIS refused the bulk slot read (%s): reading per schedule for %.0f s",
                    err,
                    _BULK_RETRY.total_seconds(),
                )
                self._bulk_retry = now + _BULK_RETRY
        slots: list[Slot] = []
        for schedule in schedules:
            slots.extend(await adapter.list_slots(schedule.schedule_id))
        return slots

    async def _update(
        self,
        departments: Iterable[Department],
        doctors: Iterable[Doctor],
        schedules: Iterable[Schedule],
        slots: Iterable[Slot],
        *,
        today: dt.date,
        read_time: dt.datetime,
        complete: frozenset[int] = frozenset(),
        deleted: Sequence[tuple[int, str]] = (),
        his_watermark: str | None = None,
    ) -> MirrorUpdate:
        entities: list[MirrorEntity] = []
        for dep in departments:
            entities.append(
                MirrorEntity(
                    directory_pb2.ENTITY_KIND_DEPARTMENT,
                    dep.department_id,
                    None,
                    convert.department(dep),
                )
            )
        for doc in doctors:
            entities.append(
                MirrorEntity(
                    directory_pb2.ENTITY_KIND_DOCTOR, doc.doctor_id, None, convert.doctor(doc)
                )
            )
        for i, sch in enumerate(schedules, 1):
            if i % _SLICE == 0:
                await asyncio.sleep(0)  # thousands of conversions: let other work run
            entities.append(
                MirrorEntity(
                    directory_pb2.ENTITY_KIND_SCHEDULE,
                    sch.schedule_id,
                    sch.visit_date,
                    convert.schedule(sch),
                )
            )
        for i, slot in enumerate(slots, 1):
            if i % _SLICE == 0:
                await asyncio.sleep(0)
            entities.append(
                MirrorEntity(
                    directory_pb2.ENTITY_KIND_SLOT,
                    slot.slot_id,
                    slot.start.astimezone(self._zone).date(),
                    convert.slot(slot),
                )
            )
        return MirrorUpdate(
            entities=entities,
            deleted=deleted,
            complete=complete,
            scope_start=today,
            read_time=read_time,
            his_watermark=his_watermark,
        )
