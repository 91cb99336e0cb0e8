"""One primary and any number of read replicas: writes to the primary, reads to a fresh replica.

A checker task asks every replica, every ``check_interval`` seconds (never per query), how
far behind the primary it is. PostgreSQL's ``now() - pg_last_xact_replay_timestamp()`` alone
is wrong both ways: on an idle primary nothing is replayed, so the age grows although the
replica is current; and a replica whose WAL receiver stopped has replayed everything it
received, so "received = replayed" alone says current while it is cut off. So a replica is
current when its WAL receiver is streaming and it has replayed all it received; otherwise its
lag is the age of the last replayed transaction (unknown counts as infinite).

Reads go to a replica whose lag is under ``max_lag`` (round robin among them), else to the
primary. A replica that fails to connect is dropped at once for that read (the read goes to
the primary) and stays out until a check finds it healthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.db import create_engine

__all__ = ["ReplicaSet", "ReplicaState"]

log = logging.getLogger(__name__)

_LAG_SQL = sa.text(
    "SELECT pg_is_in_recovery() AS standby,"
    " pg_last_wal_receive_lsn() IS NOT NULL"
    "   AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS replayed_all,"
    " EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming,"
    " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) AS age"
)


@dataclasses.dataclass
class ReplicaState:
    """What the last check found out about one replica."""

    name: str
    """The replica's URL without password."""
    engine: AsyncEngine
    """Its engine."""
    lag: float = math.inf
    """Seconds behind the primary (``inf`` when unknown or unreachable)."""
    error: str = ""
    """Why the last check failed, or ""."""
    checked_at: float = 0.0
    """``time.monotonic()`` of the last check."""


class ReplicaSet:
    """The store's engines: one primary, replicas chosen by measured replay lag.

    Use as ``async with ReplicaSet(...)``: entering starts the checker, leaving stops it and
    disposes of every engine.

    Args:
        primary: SQLAlchemy URL (or engine) of the primary; every write goes there.
        replica_urls: URLs of streaming standbys of that primary (PostgreSQL).
        max_lag: a replica further behind than this many seconds gets no reads.
        check_interval: seconds between lag checks.
        check_timeout: how long one replica's check may take before it counts as down.
    """

    def __init__(
        self,
        primary: str | AsyncEngine,
        replica_urls: Sequence[str] = (),
        *,
        max_lag: float = 5.0,
        check_interval: float = 2.0,
        check_timeout: float = 2.0,
    ) -> None:
        self.primary = create_engine(primary) if isinstance(primary, str) else primary
        self.replicas = [
            ReplicaState(
                name=make_url(u).render_as_string(hide_password=True),
                engine=create_engine(u),
            )
            for u in replica_urls
        ]
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self._healthy: list[ReplicaState] = []
        self._reads: dict[int, AsyncEngine] = {}
        self._round_robin = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._checked = asyncio.Condition()

    async def start(self) -> None:
        """Check every replica once, then keep checking in the background."""
        if self.replicas and self._task is None:
            await self.check()
            self._task = asyncio.create_task(self._loop(), name="readstore-replica-check")

    async def close(self) -> None:
        """Stop checking and dispose of every engine."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for state in self.replicas:
            await state.engine.dispose()
        await self.primary.dispose()

    async def __aenter__(self) -> ReplicaSet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self.check()

    async def check(self) -> None:
        """Measure every replica's lag now and choose the ones reads may use."""
        await asyncio.gather(*(self._check_one(s) for s in self.replicas))
        healthy = [s for s in self.replicas if s.lag <= self.max_lag]
        if {s.name for s in healthy} != {s.name for s in self._healthy}:
            log.info(
                "read replicas in use: %s",
                ", ".join(s.name for s in healthy) or "none (reads go to the primary)",
            )
        self._healthy = healthy
        async with self._checked:
            self._checked.notify_all()

    async def _check_one(self, state: ReplicaState) -> None:
        try:
            async with asyncio.timeout(self.check_timeout), state.engine.connect() as conn:
                row = (await conn.execute(_LAG_SQL)).one()
        except (TimeoutError, OSError, SQLAlchemyError) as err:
            state.lag, state.error = math.inf, _reason(err)
        else:
            if not row.standby:
                lag = 0.0  # promoted: it is a primary now, nothing to wait for
            elif row.replayed_all and row.streaming:
                lag = 0.0
            else:
                lag = math.inf if row.age is None else max(0.0, float(row.age))
            state.lag, state.error = lag, ""
        state.checked_at = time.monotonic()

    async def wait_checked(self) -> None:
        """Return after the next completed check (tests and operators observing a change)."""
        async with self._checked:
            await self._checked.wait()

    def reader(self) -> AsyncEngine:
        """The engine the next read should use: a current replica, else the primary."""
        healthy = self._healthy
        if not healthy:
            return self.primary
        return healthy[next(self._round_robin) % len(healthy)].engine

    def _autocommit(self, engine: AsyncEngine) -> AsyncEngine:
        # Reads are single statements: without BEGIN and ROLLBACK around each, a read is
        # one round trip instead of three (same pool, same connections).
        reads = self._reads.get(id(engine))
        if reads is None:
            reads = self._reads[id(engine)] = engine.execution_options(isolation_level="AUTOCOMMIT")
        return reads

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: a current replica's, or the primary's.

        A replica that cannot be reached is taken out of rotation until the next check
        finds it healthy, and this read goes to the primary.
        """
        engine = self.reader()
        if engine is self.primary:
            conn = await self._autocommit(engine).connect()
        else:
            try:
                # A replica that went silent (no reset, no answer) must not hold a read
                # for the driver's minute-long connect timeout.
                async with asyncio.timeout(self.check_timeout):
                    conn = await self._autocommit(engine).connect()
            except (TimeoutError, OSError, DBAPIError) as err:
                self._drop(engine, err)
                conn = await self._autocommit(self.primary).connect()
        try:
            yield conn
        finally:
            await conn.close()

    def _drop(self, engine: AsyncEngine, err: BaseException) -> None:
        for state in self.replicas:
            if state.engine is engine:
                state.lag, state.error = math.inf, _reason(err)
                log.warning("read replica %s is unreachable: %s", state.name, state.error)
        self._healthy = [s for s in self._healthy if s.engine is not engine]


def _reason(err: BaseException) -> str:
    lines = str(err).splitlines()
    return lines[0][:200] if lines and lines[0] else type(err).__name__
