"""The node's view of the business partitions: the map, an engine per partition, routing.

Every read or write of a partitioned record names its region; `PartitionSet` runs the work
in one transaction on the database of the partition the map gives that region, checking
the partition's fence first (see `cloud.partitions._schemas`):

* a **write** to a fenced partition is refused before anything is written; the set waits
  for the map to change (the split switching the region away; this is the pause, at most
  about a second) and runs the work again on the partition the new map names;
* a **read** of a fenced partition asks the control database whether the map changed: if
  not, the split has not switched yet, nothing can have been written since the fence, and
  the read goes on; if it did, the read runs again where the new map says.

The map's version is polled every ``poll`` seconds (faster while a write waits), so every
node notices a split within that bound; a node that meets a fence notices at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.errors import ERROR_DOMAIN
from cloud.partitions._map import (
    PartitionInfo,
    PartitionMap,
    bootstrap_map,
    load_map,
    migrate_control,
)
from cloud.partitions._schema import MAP
from cloud.partitions._schemas import (
    PartitionError,
    PartitionSchema,
    check_fence,
    migrate_partition,
    open_partition_engine,
    reading,
    writing,
)
from mesh import errors

__all__ = ["PartitionMoving", "PartitionSet"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]

_HURRY = 0.02
"""Seconds between map checks while a write waits for a fenced partition's switch."""


class PartitionMoving(errors.Unavailable):
    """A partition stayed fenced longer than the wait: a split is switching it (or died).

    UNAVAILABLE, reason ``PARTITION_MOVING``, retry after a second; nothing was written.
    """

    def __init__(self, region: str, partition: str) -> None:
        super().__init__(
            "the data region is moving to another partition; retry shortly",
            reason="PARTITION_MOVING",
            domain=ERROR_DOMAIN,
            metadata={"region": region, "partition": partition},
            retry_delay=1.0,
        )


class PartitionSet:
    """The map, one engine per partition, and fenced transactions routed by region.

    Use `open` (which makes the map on the very first start), then ``async with`` (or
    `start` and `close`) to keep the map current.

    Args:
        control: the control database (migrated, map made).
        first: the map as read at open.
        schemas: the parts' tables every partition database holds.
        poll: seconds between checks of the map's version.
        fence_wait: how long a write waits for a fenced partition's switch before it
            fails with `PartitionMoving`.
    """

    def __init__(
        self,
        control: AsyncEngine,
        first: PartitionMap,
        schemas: tuple[PartitionSchema, ...],
        *,
        poll: float = 0.5,
        fence_wait: float = 5.0,
    ) -> None:
        self._control = control
        self._map = first
        self.schemas = schemas
        self._poll = poll
        self._fence_wait = fence_wait
        self._engines: dict[str, AsyncEngine] = {}
        # One at a time: Alembic's `op` and `context` are process globals, so two migrations
        # in one process must never interleave.
        self._opening = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._hurry = 0
        self._watcher: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()
        self._sqlite_writers: dict[str, asyncio.Lock] = {}
        self._failing = False

    @classmethod
    async def open(
        cls,
        control_url: str,
        *,
        first_urls: Mapping[str, str],
        schemas: tuple[PartitionSchema, ...],
        poll: float = 0.5,
        fence_wait: float = 5.0,
    ) -> PartitionSet:
        """Open the control database (making the map on the first start) and every partition.

        Args:
            control_url: the control database.
            first_urls: where ``south`` and ``north`` live, used only when the map is made.
            schemas: the parts' tables.
            poll: seconds between checks of the map's version.
            fence_wait: see the class.

        Raises:
            PartitionError: a partition's database belongs to another partition.
            cloud.db.DatabaseError: a database cannot be reached or its URL is malformed.
        """
        control = open_partition_engine(control_url)
        try:
            await migrate_control(control)
            first = await bootstrap_map(control, first_urls)
        except BaseException:
            await control.dispose()
            raise
        parts = cls(control, first, schemas, poll=poll, fence_wait=fence_wait)
        try:
            for info in first.active:
                await parts.engine(info)
        except BaseException:
            await parts.close()
            raise
        return parts

    @property
    def map(self) -> PartitionMap:
        """The map as this node last read it."""
        return self._map

    @property
    def control(self) -> AsyncEngine:
        """The control database (the map; other parts keep global tables there too)."""
        return self._control

    def partition_of(self, region: str) -> PartitionInfo:
        """The partition the current map gives ``region``.

        Raises:
            KeyError: not a known region.
        """
        return self._map.partition_of(region)

    async def engine(self, info: PartitionInfo) -> AsyncEngine:
        """The engine of a partition, opened (and its database migrated) on first use."""
        found = self._engines.get(info.name)
        if found is not None:
            return found
        async with self._opening:
            found = self._engines.get(info.name)
            if found is None:
                found = open_partition_engine(info.url)
                try:
                    await migrate_partition(found, info.name, self.schemas)
                except BaseException:
                    await found.dispose()
                    raise
                self._engines[info.name] = found
        return found

    async def write(self, region: str, work: Work[T]) -> T:
        """Run ``work`` in one write transaction on ``region``'s partition.

        ``work`` may run more than once (again on the new partition after a split's switch;
        the first run was rolled back before it wrote anything), so it must only use the
        connection.

        Raises:
            PartitionMoving: the partition stayed fenced for ``fence_wait`` seconds.
        """
        while True:
            current = self._map
            info = current.partition_of(region)
            engine = await self.engine(info)
            async with self._turn(info.name, engine), writing(engine) as conn:
                if not await check_fence(conn, write=True):
                    return await work(conn)
            await self._await_newer(current.version, region, info.name)

    def _turn(self, name: str, engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
        """This process's turn to write to a SQLite partition (nothing for PostgreSQL).

        SQLite has one writer at a time; writers that queue inside SQLite wait in its busy
        handler, which sleeps in steps of up to 100 ms, so under load they wait far longer
        than the writes take. Queuing them here instead, in arrival order, costs nothing.
        """
        if engine.url.get_backend_name() != "sqlite":
            return contextlib.nullcontext()
        return self._sqlite_writers.setdefault(name, asyncio.Lock())

    async def read(self, region: str, work: Work[T]) -> T:
        """Run ``work`` in one read transaction on ``region``'s partition."""
        while True:
            current = self._map
            info = current.partition_of(region)
            engine = await self.engine(info)
            async with reading(engine) as conn:
                if not await check_fence(conn, write=False) or not await self.refresh():
                    return await work(conn)

    async def refresh(self) -> bool:
        """Read the map's version, and the map when it changed.

        Returns:
            Whether the map changed.
        """
        async with self._refreshing:
            async with reading(self._control) as conn:
                version = (
                    await conn.execute(sa.select(MAP.c.version).where(MAP.c.id == 1))
                ).scalar_one()
                if version == self._map.version:
                    return False
                found = await load_map(conn)
            assert found is not None
            for info in found.active:
                await self.engine(info)
            old, self._map = self._map, found
        log.info("partition map version %d -> %d", old.version, found.version)
        async with self._changed:
            self._changed.notify_all()
        return True

    async def _await_newer(self, version: int, region: str, name: str) -> None:
        """Wait until the map is newer than ``version`` (a fenced write's pause)."""
        self._hurry += 1
        await self.start()  # a tool that never started the watcher needs it now
        self._wake.set()
        try:
            async with asyncio.timeout(self._fence_wait):
                async with self._changed:
                    await self._changed.wait_for(lambda: self._map.version > version)
        except TimeoutError:
            raise PartitionMoving(region, name) from None
        finally:
            self._hurry -= 1

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _HURRY if self._hurry else self._poll)
            self._wake.clear()
            try:
                await self.refresh()
            except (OSError, sa.exc.SQLAlchemyError, PartitionError) as err:
                if not self._failing:
                    log.warning(
                        "cannot read the partition map (keeping version %d): %s",
                        self._map.version,
                        err,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("partition map readable again (version %d)", self._map.version)
                self._failing = False

    async def start(self) -> None:
        """Start checking the map's version every ``poll`` seconds."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="partition-map-watch")

    async def close(self) -> None:
        """Stop checking and close every engine."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.dispose()
        await self._control.dispose()

    async def __aenter__(self) -> PartitionSet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
