"""The durable task store: one SQLite table, every transition one committed statement.

Claiming is a single ``UPDATE … WHERE seq = (SELECT … LIMIT 1) RETURNING``, so two workers
(or two processes) can never claim the same task, and a claim is a lease: a RUNNING task
whose lease expired (its process died) is claimable again, and the attempt counter it
carries tells the executor this is a repeat.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from frontend_server.sqlite import StoreHealth, StoreKind, sqlite_engine
from frontend_server.tasks._errors import (
    QueueFull,
    TaskKeyReused,
    TaskNotFound,
    TaskNotRetryable,
    TaskStoreDamaged,
)
from frontend_server.tasks._model import KindStats, QueueStats, Task, TaskError, TaskState

__all__ = ["TASK_STORE", "Outcome", "TaskStore"]

_metadata = MetaData()
_tasks = Table(
    "tasks",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(40), nullable=False, unique=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", Text),
    Column("lease_expires_at", Float),
    Column("last_error", Text),
    Column("result", LargeBinary),
    Column("create_time", Float, nullable=False),
    Column("start_time", Float),
    Column("update_time", Float, nullable=False),
    Column("complete_time", Float),
    Column("deadline", Float, nullable=False),
    Column("trace_id", Text, nullable=False),
    Column("delivered_time", Float),
    Index("ix_tasks_claim", "state", "priority", "seq"),
)

TASK_STORE = StoreKind(
    name="tasks",
    title="the task store",
    application_id=int.from_bytes(b"hplT", "big"),
    schema_version=1,
    tables=frozenset({"tasks"}),
    entries_table="tasks",
)
"""The task store's file on disk: its SQLite ``application_id`` and schema version (checked
at the edge's start; version 1 is the ``tasks`` table plus the store's stamp)."""

_FINAL_FOR_DELIVERY = (TaskState.SUCCEEDED.value, TaskState.FAILED.value)

_record_statement = (
    update(_tasks)
    .where(
        _tasks.c.task_id == bindparam("b_task_id"),
        _tasks.c.lease_owner == bindparam("b_owner"),
        _tasks.c.state == TaskState.RUNNING.value,
    )
    .values(
        state=bindparam("b_state"),
        lease_owner=None,
        lease_expires_at=None,
        update_time=bindparam("b_now"),
        last_error=bindparam("b_error"),
        result=bindparam("b_result", type_=LargeBinary),
        complete_time=bindparam("b_complete", type_=Float),
        next_attempt_at=func.coalesce(bindparam("b_next", type_=Float), _tasks.c.next_attempt_at),
    )
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """The end of one attempt, to be recorded by the lease holder."""

    task_id: str
    """The task."""
    state: TaskState
    """SUCCEEDED, FAILED, PARKED, or QUEUED (retry at ``next_attempt_at``)."""
    result: bytes | None = None
    """For SUCCEEDED."""
    error: TaskError | None = None
    """For FAILED, PARKED and QUEUED."""
    next_attempt_at: float | None = None
    """For QUEUED; ``None`` means now."""


def _fingerprint(kind: str, payload: bytes) -> str:
    return hashlib.sha256(kind.encode("utf-8") + b"\x00" + payload).hexdigest()


def _error_json(error: TaskError | None) -> str | None:
    if error is None:
        return None
    return json.dumps(
        {"code": error.code, "reason": error.reason, "message": error.message}, sort_keys=True
    )


def _task(row: Row[Any]) -> Task:
    return Task(
        task_id=row.task_id,
        idempotency_key=row.idempotency_key,
        kind=row.kind,
        payload=row.payload,
        priority=row.priority,
        state=TaskState(row.state),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        last_error=TaskError(**json.loads(row.last_error)) if row.last_error else None,
        result=row.result,
        create_time=row.create_time,
        start_time=row.start_time,
        update_time=row.update_time,
        complete_time=row.complete_time,
        next_attempt_at=row.next_attempt_at,
        deadline=row.deadline,
        trace_id=row.trace_id,
        delivered_time=row.delivered_time,
    )


class TaskStore:
    """Durable storage of tasks in SQLite.

    Args:
        engine: an async SQLAlchemy engine on the queue's SQLite file.
        clock: wall clock in epoch seconds.
        owns_engine: dispose of ``engine`` on close.
        health: the engine's damage record (see :meth:`open`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        owns_engine: bool = False,
        health: StoreHealth | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._owns_engine = owns_engine
        self._health = health

    @classmethod
    def open(cls, path: Path | str, *, clock: Callable[[], float] = time.time) -> TaskStore:
        """A store on the SQLite file ``path`` (created mode 0600 if missing), owning its engine.

        Should SQLite find the file damaged, that call and every later one raise
        :class:`TaskStoreDamaged` (DATA_LOSS) and :attr:`damage` says so.
        """
        health = None if str(path) == ":memory:" else StoreHealth(Path(path), TaskStoreDamaged)
        return cls(sqlite_engine(path, health=health), clock=clock, owns_engine=True, health=health)

    @property
    def damage(self) -> str | None:
        """What damage SQLite found in the file while running; ``None`` while healthy."""
        return None if self._health is None else self._health.damage

    @property
    def clock(self) -> Callable[[], float]:
        """The store's wall clock."""
        return self._clock

    async def start(self) -> None:
        """Create the table if needed."""
        async with self._engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)

    async def aclose(self) -> None:
        """Release the database."""
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> TaskStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- submission ----------------------------------------------------------------------

    async def submit(
        self,
        *,
        idempotency_key: str,
        kind: str,
        payload: bytes,
        priority: int,
        max_attempts: int,
        deadline: float,
        queue_limit: int,
        trace_id: str = "",
    ) -> tuple[Task, bool]:
        """Store a new QUEUED task, or return the one already submitted under the key.

        Returns:
            The task and whether it was created now.

        Raises:
            TaskKeyReused: the key was used with another kind or payload.
            QueueFull: ``queue_limit`` tasks are waiting.
        """
        fingerprint = _fingerprint(kind, payload)
        existing = await self._by_key(idempotency_key)
        if existing is not None:
            task, known = existing
            if known != fingerprint:
                raise TaskKeyReused("the key was used with another kind or payload")
            return task, False
        now = self._clock()
        async with self._engine.begin() as conn:
            backlog = (
                await conn.execute(
                    select(func.count()).where(_tasks.c.state == TaskState.QUEUED.value)
                )
            ).scalar_one()
            if backlog >= queue_limit:
                raise QueueFull(f"{backlog} tasks are waiting", retry_after_seconds=30.0)
            inserted = await conn.execute(
                sqlite_insert(_tasks)
                .values(
                    task_id=uuid.uuid4().hex,
                    idempotency_key=idempotency_key,
                    fingerprint=fingerprint,
                    kind=kind,
                    payload=payload,
                    priority=priority,
                    state=TaskState.QUEUED.value,
                    attempts=0,
                    max_attempts=max_attempts,
                    next_attempt_at=now,
                    create_time=now,
                    update_time=now,
                    deadline=deadline,
                    trace_id=trace_id,
                )
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
            )
            row = (
                await conn.execute(
                    select(_tasks).where(_tasks.c.idempotency_key == idempotency_key)
                )
            ).one()
        if row.fingerprint != fingerprint:  # lost a race with another submission of the key
            raise TaskKeyReused("the key was used with another kind or payload")
        return _task(row), inserted.rowcount == 1

    # -- the worker's transitions --------------------------------------------------------

    async def claim(self, *, owner: str, lease_seconds: float) -> Task | None:
        """Claim the next due task under a lease (see :meth:`exchange`)."""
        _, claimed = await self.exchange(
            owner=owner, outcomes=(), claim=1, lease_seconds=lease_seconds
        )
        return claimed[0] if claimed else None

    async def finish(
        self,
        task_id: str,
        *,
        owner: str,
        state: TaskState,
        result: bytes | None = None,
        error: TaskError | None = None,
        next_attempt_at: float | None = None,
    ) -> bool:
        """Record the end of one attempt by the lease holder (see :meth:`exchange`)."""
        outcome = Outcome(
            task_id=task_id,
            state=state,
            result=result,
            error=error,
            next_attempt_at=next_attempt_at,
        )
        recorded, _ = await self.exchange(owner=owner, outcomes=[outcome], claim=0, lease_seconds=0)
        return recorded == 1

    async def exchange(
        self,
        *,
        owner: str,
        outcomes: Sequence[Outcome],
        claim: int,
        lease_seconds: float,
    ) -> tuple[int, list[Task]]:
        """Record finished attempts and claim new tasks, in one transaction (group commit).

        Recording: only the lease holder's record counts; a worker that lost its lease (it
        expired and another claimed the task) changes nothing.

        Claiming: the due tasks (QUEUED past ``next_attempt_at``, or RUNNING under an
        expired lease: its worker died), highest priority first, then oldest; each claim
        counts an attempt.

        Args:
            owner: the lease owner (this process).
            outcomes: attempts to record.
            claim: how many tasks to claim, at most.
            lease_seconds: lease length of the claimed tasks.

        Returns:
            How many outcomes were recorded, and the claimed tasks in order.
        """
        now = self._clock()
        recorded = 0
        claimed: list[Task] = []
        async with self._engine.begin() as conn:
            if outcomes:
                # One executemany for all outcomes: the per-statement cost of the async
                # driver, not SQLite, is what limits a busy queue.
                result = await conn.execute(
                    _record_statement,
                    [
                        {
                            "b_task_id": o.task_id,
                            "b_owner": owner,
                            "b_state": o.state.value,
                            "b_now": now,
                            "b_error": _error_json(o.error),
                            "b_result": None if o.state is TaskState.QUEUED else o.result,
                            "b_complete": None if o.state is TaskState.QUEUED else now,
                            "b_next": (
                                (now if o.next_attempt_at is None else o.next_attempt_at)
                                if o.state is TaskState.QUEUED
                                else None
                            ),
                        }
                        for o in outcomes
                    ],
                )
                recorded = int(result.rowcount)
            if claim > 0:
                due = (
                    select(_tasks.c.seq)
                    .where(
                        or_(
                            and_(
                                _tasks.c.state == TaskState.QUEUED.value,
                                _tasks.c.next_attempt_at <= now,
                            ),
                            and_(
                                _tasks.c.state == TaskState.RUNNING.value,
                                _tasks.c.lease_expires_at <= now,
                            ),
                        )
                    )
                    .order_by(_tasks.c.priority.desc(), _tasks.c.seq)
                    .limit(claim)
                )
                rows = (
                    await conn.execute(
                        update(_tasks)
                        .where(_tasks.c.seq.in_(due.scalar_subquery()))
                        .values(
                            state=TaskState.RUNNING.value,
                            lease_owner=owner,
                            lease_expires_at=now + lease_seconds,
                            attempts=_tasks.c.attempts + 1,
                            start_time=now,
                            update_time=now,
                        )
                        .returning(*_tasks.c)
                    )
                ).all()
                claimed = [_task(r) for r in sorted(rows, key=lambda r: (-r.priority, r.seq))]
        return recorded, claimed

    async def release(self, task_ids: Sequence[str], *, owner: str) -> int:
        """Give back claimed tasks whose attempt never started (the attempt is not counted)."""
        if not task_ids:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_tasks)
                .where(
                    _tasks.c.task_id.in_(list(task_ids)),
                    _tasks.c.lease_owner == owner,
                    _tasks.c.state == TaskState.RUNNING.value,
                )
                .values(
                    state=TaskState.QUEUED.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=_tasks.c.attempts - 1,
                    update_time=self._clock(),
                )
            )
        return int(result.rowcount)

    async def renew_leases(self, *, owner: str, lease_seconds: float) -> int:
        """Extend every lease ``owner`` holds (the worker's heartbeat)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_tasks)
                .where(_tasks.c.lease_owner == owner, _tasks.c.state == TaskState.RUNNING.value)
                .values(lease_expires_at=self._clock() + lease_seconds)
            )
        return int(result.rowcount)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The task with ``task_id``."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(_tasks).where(_tasks.c.task_id == task_id))
            ).one_or_none()
        return None if row is None else _task(row)

    async def get_by_key(self, idempotency_key: str) -> Task | None:
        """The task submitted under ``idempotency_key``."""
        found = await self._by_key(idempotency_key)
        return None if found is None else found[0]

    async def _by_key(self, idempotency_key: str) -> tuple[Task, str] | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_tasks).where(_tasks.c.idempotency_key == idempotency_key)
                )
            ).one_or_none()
        return None if row is None else (_task(row), row.fingerprint)

    async def list_tasks(
        self,
        *,
        states: Iterable[TaskState] = (),
        kinds: Iterable[str] = (),
        created_after: float | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[tuple[int, Task]]:
        """Tasks newest first, filtered; each with its sequence number (the page token)."""
        query = select(_tasks).order_by(_tasks.c.seq.desc()).limit(limit)
        state_values = [s.value for s in states]
        kind_values = list(kinds)
        if state_values:
            query = query.where(_tasks.c.state.in_(state_values))
        if kind_values:
            query = query.where(_tasks.c.kind.in_(kind_values))
        if created_after is not None:
            query = query.where(_tasks.c.create_time >= created_after)
        if before_seq is not None:
            query = query.where(_tasks.c.seq < before_seq)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(r.seq, _task(r)) for r in rows]

    async def queue_position(self, task: Task) -> int:
        """1-based position of a QUEUED task among waiting tasks; 0 when not queued."""
        if task.state is not TaskState.QUEUED:
            return 0
        async with self._engine.connect() as conn:
            seq = (
                await conn.execute(select(_tasks.c.seq).where(_tasks.c.task_id == task.task_id))
            ).scalar_one()
            ahead = (
                await conn.execute(
                    select(func.count()).where(
                        _tasks.c.state == TaskState.QUEUED.value,
                        or_(
                            _tasks.c.priority > task.priority,
                            and_(_tasks.c.priority == task.priority, _tasks.c.seq < seq),
                        ),
                    )
                )
            ).scalar_one()
        return int(ahead) + 1

    async def open_count(self) -> int:
        """Tasks not yet finished (QUEUED or RUNNING)."""
        async with self._engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(
                            _tasks.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value])
                        )
                    )
                ).scalar_one()
            )

    async def next_due(self) -> float | None:
        """Earliest moment a task becomes claimable (retry delay or lease expiry)."""
        async with self._engine.connect() as conn:
            queued = (
                await conn.execute(
                    select(func.min(_tasks.c.next_attempt_at)).where(
                        _tasks.c.state == TaskState.QUEUED.value
                    )
                )
            ).scalar_one()
            leased = (
                await conn.execute(
                    select(func.min(_tasks.c.lease_expires_at)).where(
                        _tasks.c.state == TaskState.RUNNING.value
                    )
                )
            ).scalar_one()
        times = [t for t in (queued, leased) if t is not None]
        return min(times) if times else None

    async def stats(self, *, drain_rate_per_second: float) -> QueueStats:
        """Backlog, running, parked, dwell time and last hour's outcomes, overall and by kind."""
        now = self._clock()
        hour_ago = now - 3600.0
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        _tasks.c.kind,
                        _tasks.c.state,
                        func.count(),
                        func.min(_tasks.c.create_time),
                    ).group_by(_tasks.c.kind, _tasks.c.state)
                )
            ).all()
            recent = (
                await conn.execute(
                    select(_tasks.c.state, func.count())
                    .where(_tasks.c.complete_time >= hour_ago)
                    .group_by(_tasks.c.state)
                )
            ).all()
        by_kind: dict[str, dict[str, Any]] = {}
        for kind, state, count, oldest in rows:
            entry = by_kind.setdefault(kind, {"counts": {}, "oldest": None})
            entry["counts"][state] = count
            if state == TaskState.QUEUED.value:
                entry["oldest"] = oldest
        kinds = {
            kind: KindStats(
                backlog=e["counts"].get(TaskState.QUEUED.value, 0),
                running=e["counts"].get(TaskState.RUNNING.value, 0),
                parked=e["counts"].get(TaskState.PARKED.value, 0),
                oldest_queued_age_seconds=max(0.0, now - e["oldest"]) if e["oldest"] else 0.0,
            )
            for kind, e in sorted(by_kind.items())
        }
        finished = {state: count for state, count in recent}
        return QueueStats(
            backlog=sum(k.backlog for k in kinds.values()),
            running=sum(k.running for k in kinds.values()),
            parked=sum(k.parked for k in kinds.values()),
            oldest_queued_age_seconds=max(
                (k.oldest_queued_age_seconds for k in kinds.values()), default=0.0
            ),
            succeeded_last_hour=finished.get(TaskState.SUCCEEDED.value, 0),
            failed_last_hour=finished.get(TaskState.FAILED.value, 0)
            + finished.get(TaskState.PARKED.value, 0),
            drain_rate_per_second=drain_rate_per_second,
            by_kind=kinds,
        )

    # -- results and operators -----------------------------------------------------------

    async def pending_results(self, *, limit: int = 100) -> list[Task]:
        """Finished (SUCCEEDED or FAILED) tasks whose result the cloud has not acknowledged."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_tasks)
                    .where(
                        _tasks.c.state.in_(_FINAL_FOR_DELIVERY), _tasks.c.delivered_time.is_(None)
                    )
                    .order_by(_tasks.c.complete_time)
                    .limit(limit)
                )
            ).all()
        return [_task(r) for r in rows]

    async def ack(self, task_ids: Sequence[str]) -> int:
        """The cloud has the results: mark them delivered and delete the result bodies.

        The task rows stay (for GetTask and for the submission key's idempotency) until
        :meth:`purge`.

        Returns:
            How many tasks were acknowledged now.
        """
        if not task_ids:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_tasks)
                .where(
                    _tasks.c.task_id.in_(list(task_ids)),
                    _tasks.c.state.in_(_FINAL_FOR_DELIVERY),
                    _tasks.c.delivered_time.is_(None),
                )
                .values(delivered_time=self._clock(), result=None)
            )
        return int(result.rowcount)

    async def purge(self, *, older_than: float) -> int:
        """Delete delivered tasks completed before ``older_than`` (epoch seconds)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                _tasks.delete().where(
                    _tasks.c.delivered_time.is_not(None), _tasks.c.complete_time < older_than
                )
            )
        return int(result.rowcount)

    async def retry(self, task_id: str, *, budget: int, deadline: float | None) -> Task:
        """Put a PARKED or FAILED task back in the queue with ``budget`` more attempts.

        A QUEUED or RUNNING task is returned unchanged.

        Raises:
            TaskNotFound: no such task.
            TaskNotRetryable: the task succeeded.
        """
        task = await self.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task {task_id}")
        if task.state is TaskState.SUCCEEDED:
            raise TaskNotRetryable("the task succeeded")
        if task.state in (TaskState.QUEUED, TaskState.RUNNING):
            return task
        now = self._clock()
        values: dict[str, Any] = {
            "state": TaskState.QUEUED.value,
            "max_attempts": max(task.max_attempts, task.attempts) + budget,
            "next_attempt_at": now,
            "update_time": now,
            "complete_time": None,
            "delivered_time": None,
        }
        if deadline is not None:
            values["deadline"] = deadline
        async with self._engine.begin() as conn:
            await conn.execute(
                update(_tasks)
                .where(
                    _tasks.c.task_id == task_id,
                    _tasks.c.state.in_([TaskState.PARKED.value, TaskState.FAILED.value]),
                )
                .values(**values)
            )
        refreshed = await self.get(task_id)
        assert refreshed is not None  # rows are never deleted before delivery
        return refreshed
