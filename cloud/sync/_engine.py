"""The sync engine: keeps the read store in step with every hospital whose tunnel is here.

Per hospital, on its own schedule: a full pass on first contact (no watermark yet), then
incremental passes from the saved watermark, schedules and slots every ``slot_interval``,
departments and doctors every ``directory_interval``; every ``drift_interval`` a digest
comparison that re-reads only the buckets that differ.

Bounded everywhere, so a slow or broken hospital costs only itself: at most ``concurrency``
hospitals are synced at once (a semaphore), every call has a deadline, every pass a time
and page limit. A hospital whose tunnel is down is skipped at once and marked offline
(stale); one whose tunnel is on another node is left to that node. Where two nodes hold
tunnels of one hospital, a lease in the store lets only one sync it.

Failures never stop the engine: they are recorded in the hospital's sync state (shown by
``hplus cloud sync status``) and the next pass starts again from the saved watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from sqlalchemy.exc import SQLAlchemyError

from cloud.config import SyncConfig
from cloud.db import DatabaseError
from cloud.readstore import ALL_KINDS, KIND_NAMES, ChangePass, FeedError, PassResult, ReadStore
from cloud.sync._source import HospitalSource, Locality, SourceError
from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_of

__all__ = ["DIRECTORY", "SLOTS", "DriftResult", "SyncEngine"]

log = logging.getLogger(__name__)

DIRECTORY = (directory_pb2.ENTITY_KIND_DEPARTMENT, directory_pb2.ENTITY_KIND_DOCTOR)
"""Kinds synced together, rarely: departments and doctors (one watermark)."""
SLOTS = (directory_pb2.ENTITY_KIND_SCHEDULE, directory_pb2.ENTITY_KIND_SLOT)
"""Kinds synced together, often: sessions and slots (one watermark)."""

_DRIFT = "drift"
_OFFLINE_RETRY = 5.0  # seconds between looks at an offline hospital's tunnel
_DIRECTORY = "departments+doctors"
_SLOTS = "schedules+slots"
_GROUPS = {_DIRECTORY: DIRECTORY, _SLOTS: SLOTS}
T = TypeVar("T")
_STORE_ERRORS = (DatabaseError, SQLAlchemyError, OSError)


@dataclasses.dataclass(frozen=True)
class DriftResult:
    """The outcome of one digest comparison."""

    differing: dict[int, list[int]]
    """Per kind, the buckets whose digests differed (and were re-read)."""
    bucket_count: int
    """Buckets per kind."""

    @property
    def summary(self) -> str:
        """One line for sync status."""
        if not self.differing:
            return f"in step ({self.bucket_count} buckets per kind)"
        parts = [
            f"{KIND_NAMES.get(k, str(k))} {len(b)}/{self.bucket_count}"
            for k, b in sorted(self.differing.items())
        ]
        return "resynced differing buckets: " + ", ".join(parts)


class SyncEngine:
    """Schedules and runs syncs; use as ``async with`` or `start` / `shutdown`.

    Args:
        store: the read store to fill.
        source: how hospitals are reached.
        config: intervals, limits.
        node_id: this node's id (lease owner).
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        store: ReadStore,
        source: HospitalSource,
        *,
        config: SyncConfig,
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.source = source
        self.config = config
        self.node_id = node_id
        self._clock = clock
        self._gate = asyncio.Semaphore(config.concurrency)
        self._due: dict[str, dict[str, float]] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._offline: set[str] = set()
        # While this node holds a hospital's lease without a break, what it last saved is
        # what the store holds: a pass needs neither a lease write nor a watermark read.
        self._leased: dict[str, float] = {}
        self._saved: dict[tuple[str, tuple[int, ...]], tuple[str, dt.datetime | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_prune = 0.0

    async def start(self) -> None:
        """Start scheduling in an owned task (an owner may instead await :meth:`run`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="readstore-sync")

    async def shutdown(self) -> None:
        """Stop scheduling, cancel running syncs, and give up this node's leases.

        Cancelled passes resume from their watermark; another node can take the hospitals
        at once. A :meth:`run` awaited by an owner returns at its next tick.
        """
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        jobs, self._jobs = list(self._jobs.values()), {}
        for t in [*jobs, *([task] if task else [])]:
            t.cancel()
        for t in [*jobs, *([task] if task else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._leased.clear()
        self._saved.clear()
        with contextlib.suppress(*_STORE_ERRORS):
            await self.store.release_leases(self.node_id)

    async def __aenter__(self) -> SyncEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def wake(self) -> None:
        """Run a scheduling round now (e.g. after a hospital connected)."""
        self._wake.set()

    def mark_due(self, hospital_id: str, kinds: tuple[int, ...] | None = None) -> None:
        """Sync a hospital at the next round (its tunnel just came up, an operator asked).

        Args:
            hospital_id: the hospital.
            kinds: `DIRECTORY` or `SLOTS`; ``None``: both.
        """
        due = self._due.get(hospital_id)
        if due is not None:
            for group, group_kinds in _GROUPS.items():
                if kinds is None or kinds == group_kinds:
                    due[group] = 0.0
        self.wake()

    # -- scheduling -------------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule syncs until :meth:`shutdown`: a round every tick, or when woken."""
        tick = min(1.0, self.config.slot_interval / 4)
        while not self._stopping.is_set():
            # Cleared before the round: a wake that arrives during it starts the next one.
            self._wake.clear()
            try:
                await self.run_round()
            except _STORE_ERRORS as err:
                log.warning("sync round skipped: read store unreachable: %s", _one_line(err))
            except Exception:
                # Scheduling must outlive a bug met once; the next tick tries again.
                log.exception("sync round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    async def run_round(self, *, wait: bool = False) -> None:
        """Start a sync job for every hospital with something due and none running.

        Args:
            wait: return only once the jobs this round started have finished (tools,
                benchmarks; the background loop does not wait).
        """
        now = self._clock()
        if now >= self._next_prune:
            self._next_prune = now + 3600.0
            await self._prune()
        started = []
        for hospital_id in await self.store.hospital_ids():
            if self._stopping.is_set():
                break  # shutdown has cancelled the jobs: start no new ones
            if hospital_id in self._jobs:
                continue
            due = self._due.setdefault(hospital_id, self._first_due(hospital_id, now))
            groups = [g for g, at in due.items() if at <= now]
            if groups:
                job = asyncio.create_task(
                    self._job(hospital_id, groups), name=f"sync-{hospital_id}"
                )
                self._jobs[hospital_id] = job
                job.add_done_callback(functools.partial(self._forget, hospital_id))
                started.append(job)
        if wait and started:
            await asyncio.gather(*started)

    def _forget(self, hospital_id: str, job: asyncio.Task[None]) -> None:
        if self._jobs.get(hospital_id) is job:
            del self._jobs[hospital_id]

    def _first_due(self, hospital_id: str, now: float) -> dict[str, float]:
        # First contact: everything now; drift checks spread over the interval, so 2,000
        # hospitals do not all compare digests in the same minute.
        spread = bucket_of(hospital_id, 1000) / 1000
        return {
            _DIRECTORY: now,
            _SLOTS: now,
            _DRIFT: now + self.config.drift_interval * (0.5 + spread / 2),
        }

    def _reschedule(self, hospital_id: str, groups: Sequence[str]) -> None:
        now = self._clock()
        interval = {
            _DIRECTORY: self.config.directory_interval,
            _SLOTS: self.config.slot_interval,
            _DRIFT: self.config.drift_interval,
        }
        due = self._due.setdefault(hospital_id, {})
        for g in groups:
            due[g] = now + interval[g]

    async def _job(self, hospital_id: str, groups: list[str]) -> None:
        try:
            if not await self._sync_due(hospital_id, groups):
                # Offline: look again soon, so a hospital that reconnects is synced within
                # seconds, not one interval later.
                self._reschedule(hospital_id, groups)
                due = self._due[hospital_id]
                for g in groups:
                    if g != _DRIFT:
                        due[g] = min(due[g], self._clock() + _OFFLINE_RETRY)
                return
        except asyncio.CancelledError:
            raise
        except _STORE_ERRORS as err:
            log.warning("sync of %s interrupted: read store: %s", hospital_id, _one_line(err))
        except Exception:
            # A bug met with one hospital's data must not stop the sync of all the others.
            log.exception("sync of %s failed unexpectedly", hospital_id)
        self._reschedule(hospital_id, groups)

    async def _sync_due(self, hospital_id: str, groups: list[str]) -> bool:
        """Sync what is due if this node should; False when the hospital is offline."""
        where = await self.source.locality(hospital_id)
        if where is Locality.OFFLINE:
            if hospital_id not in self._offline:
                self._offline.add(hospital_id)
                await self.store.set_offline(hospital_id, True)
            return False
        if where is not Locality.LOCAL:
            return True
        if hospital_id in self._offline:
            self._offline.discard(hospital_id)
            await self.store.set_offline(hospital_id, False)
        async with self._gate:
            if not await self._hold(hospital_id):
                return True
            for group in groups:
                if group == _DRIFT:
                    await self.check_drift(hospital_id)
                else:
                    await self.sync_kinds(hospital_id, _GROUPS[group])
        return True

    async def _hold(self, hospital_id: str) -> bool:
        """Whether this node may sync the hospital now (taking or renewing its lease)."""
        now = self._clock()
        if self._leased.get(hospital_id, 0.0) > now:
            return True
        ttl = self.config.lease_seconds
        if not await self.store.acquire_lease(hospital_id, self.node_id, ttl):
            self._leased.pop(hospital_id, None)
            self._forget_saved(hospital_id)
            return False
        if hospital_id not in self._leased:
            self._forget_saved(hospital_id)  # another node may have synced it meanwhile
        # Renewed at half its life, so it never lapses while this node keeps syncing.
        self._leased[hospital_id] = now + ttl / 2
        return True

    def _forget_saved(self, hospital_id: str) -> None:
        for key in [k for k in self._saved if k[0] == hospital_id]:
            del self._saved[key]

    async def _prune(self) -> None:
        # Two days back covers every time zone's "yesterday"; slots past are not bookable.
        today = dt.datetime.now(dt.UTC).date()
        removed = await self.store.prune(
            today - dt.timedelta(days=2),
            tombstones_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=7),
        )
        if removed:
            log.info("read store: aged out %d past sessions, slots and tombstones", removed)

    # -- passes -----------------------------------------------------------------------------

    async def sync_kinds(
        self, hospital_id: str, kinds: Sequence[int], *, full: bool = False
    ) -> PassResult | None:
        """One pass of ``GetChanges`` for ``kinds`` (from their watermark, or full).

        Failures are recorded in the sync state, not raised.

        Returns:
            What the pass did, or ``None`` when it failed.
        """
        key = (hospital_id, tuple(kinds))
        change_pass = await self.store.begin_pass(
            hospital_id, kinds, full=full, saved=self._saved.pop(key, None)
        )
        request = directory_pb2.GetChangesRequest(
            since=change_pass.since, kinds=_enum(kinds), page_size=self.config.page_size
        )
        result = await self._run_pass(change_pass, request)
        if change_pass.saved is not None and hospital_id in self._leased:
            self._saved[key] = change_pass.saved
        return result

    async def _run_pass(
        self, change_pass: ChangePass, request: directory_pb2.GetChangesRequest
    ) -> PassResult | None:
        h, kinds = change_pass.hospital_id, change_pass.kinds
        cfg = self.config
        deadline = self._clock() + cfg.pass_timeout
        tokens: set[str] = set()
        try:
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise SourceError(
                        "DEADLINE_EXCEEDED", f"pass longer than {cfg.pass_timeout:g}s"
                    )
                page = await self._call(
                    self.source.get_changes(
                        h, request, time_limit=min(cfg.call_timeout, remaining)
                    ),
                    min(cfg.call_timeout, remaining),
                )
                if await change_pass.apply(page):
                    return change_pass.result
                token = page.next_page_token
                if token in tokens or change_pass.result.pages >= cfg.max_pages:
                    raise FeedError(
                        "next_page_token repeats" if token in tokens
                        else f"more than {cfg.max_pages} pages in one pass"
                    )  # fmt: skip
                tokens.add(token)
                request.page_token = token
        except FeedError as err:
            message = f"bad feed ({_kinds(kinds)}): {err}"
            log.warning("hospital %s: %s", h, message)
            await self.store.flag(h, message)
            await self.store.record_failure(h, kinds, message)
        except SourceError as err:
            log.info("hospital %s: sync of %s failed: %s", h, _kinds(kinds), err)
            await self.store.record_failure(h, kinds, str(err))
        return None

    async def _call(self, call: Awaitable[T], limit: float) -> T:
        # The source gets the deadline too; this bound holds even if a source ignores it.
        try:
            async with asyncio.timeout(limit + 1.0):
                return await call
        except TimeoutError:
            raise SourceError("DEADLINE_EXCEEDED", f"no answer within {limit:g}s") from None

    async def check_drift(self, hospital_id: str) -> DriftResult | None:
        """Compare the hospital's digests with the store's; re-read the differing buckets.

        Returns:
            What differed, or ``None`` when the comparison failed (recorded in sync state).
        """
        cfg = self.config
        try:
            answer = await self._call(
                self.source.get_digest(
                    hospital_id,
                    directory_pb2.GetDirectoryDigestRequest(
                        kinds=_enum(ALL_KINDS), bucket_count=cfg.bucket_count
                    ),
                    time_limit=cfg.call_timeout,
                ),
                cfg.call_timeout,
            )
            theirs, count, scope = _check_digest(answer)
        except (SourceError, FeedError) as err:
            await self.store.record_drift(hospital_id, f"digest check failed: {err}", 0)
            if isinstance(err, FeedError):
                await self.store.flag(hospital_id, f"bad digest: {err}")
            return None
        mine = await self.store.digests(hospital_id, list(theirs), count, scope)
        differing: dict[int, list[int]] = {}
        for kind, digests in theirs.items():
            ours = mine[kind][1]
            wrong = [i for i, (a, b) in enumerate(zip(digests, ours, strict=True)) if a != b]
            if wrong:
                differing[kind] = wrong
        for kind, buckets in differing.items():
            change_pass = await self.store.begin_pass(
                hospital_id, [kind], buckets=(count, frozenset(buckets))
            )
            request = directory_pb2.GetChangesRequest(
                kinds=_enum([kind]),
                page_size=cfg.page_size,
                buckets=directory_pb2.BucketFilter(bucket_count=count, buckets=buckets),
            )
            await self._run_pass(change_pass, request)
        result = DriftResult(differing=differing, bucket_count=count)
        if differing:
            log.info("hospital %s: drift found: %s", hospital_id, result.summary)
        await self.store.record_drift(
            hospital_id, result.summary, sum(len(b) for b in differing.values())
        )
        return result


def _enum(kinds: Sequence[int]) -> list[directory_pb2.EntityKind.ValueType]:
    return cast("list[directory_pb2.EntityKind.ValueType]", list(kinds))


def _kinds(kinds: Sequence[int]) -> str:
    return "+".join(KIND_NAMES.get(k, str(k)) for k in kinds)


def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()
    return text[0][:300] if text else type(err).__name__


def _check_digest(
    answer: directory_pb2.GetDirectoryDigestResponse,
) -> tuple[dict[int, list[bytes]], int, dt.date]:
    count = answer.bucket_count
    if not 1 <= count <= 4096:
        raise FeedError(f"bucket_count: {count} is outside [1, 4096]")
    d = answer.scope_start_date
    try:
        scope = dt.date(d.year, d.month, d.day)
    except ValueError:
        raise FeedError("scope_start_date: not a date") from None
    theirs: dict[int, list[bytes]] = {}
    for i, kind in enumerate(answer.kinds):
        if kind.kind not in ALL_KINDS or kind.kind in theirs:
            raise FeedError(f"kinds[{i}].kind: {kind.kind} unknown or repeated")
        if len(kind.bucket_digests) != count or any(len(b) != 32 for b in kind.bucket_digests):
            raise FeedError(f"kinds[{i}].bucket_digests: expected {count} digests of 32 bytes")
        theirs[kind.kind] = list(kind.bucket_digests)
    return theirs, count, scope
