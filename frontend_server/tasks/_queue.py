"""The pending-task queue: accept at once, drain against the HIS at the profile's pace.

:class:`TaskQueue` owns a :class:`~frontend_server.tasks.TaskStore` and ``max_concurrency``
workers. A worker claims the next due task under a lease, takes a token from the drain-rate
bucket, and calls the executor with the task's idempotency key. Outcomes:

* a result → SUCCEEDED, kept until the cloud acknowledges it (:meth:`TaskQueue.ack`);
* :class:`TransientTaskError`, ``TimeoutError``, ``ConnectionError`` → QUEUED again after
  an exponential backoff with full jitter, stored as ``next_attempt_at``; after
  ``max_attempts`` attempts → PARKED;
* :class:`PermanentTaskError` → FAILED;
* any other exception (unclassified) → PARKED, for an operator.

One coroutine, the pump, does the workers' database writes: each of its transactions
records every attempt finished since the last one and claims as many tasks as the workers
can take (group commit), so the queue keeps up with a fast HIS rate while every commit is
synchronous. A worker does not wait for its outcome's commit.

If the process dies, a RUNNING task's lease expires and the task is claimed again (a new
attempt, same idempotency key, so the HIS can deduplicate); a task recorded as finished is
never attempted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from frontend_server.tasks._config import QueueConfig
from frontend_server.tasks._errors import PermanentTaskError, TransientTaskError
from frontend_server.tasks._limiter import TokenBucket
from frontend_server.tasks._model import Executor, QueueStats, Task, TaskError, TaskRun, TaskState
from frontend_server.tasks._store import Outcome, TaskStore
from mesh.retry import RetryPolicy

__all__ = ["TaskQueue", "backoff_delay"]

log = logging.getLogger(__name__)

_MIN_WAIT = 0.001
_FINAL = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.PARKED)


def backoff_delay(config: QueueConfig, attempts: int, rng: random.Random) -> float:
    """Delay before the next attempt after ``attempts`` failed ones.

    The queue's settings as a :class:`~mesh.retry.RetryPolicy`: full jitter below a
    ceiling of ``initial * multiplier ** (attempts - 1)``, capped at the maximum, so
    retries of many tasks spread out. The task's own deadline and ``max_attempts`` decide
    when to give up, not the policy.
    """
    policy = RetryPolicy(
        initial=config.backoff_initial_seconds,
        maximum=config.backoff_max_seconds,
        multiplier=config.backoff_multiplier,
        deadline=None,
    )
    return policy.delay(attempts, rng)


class TaskQueue:
    """Durable pending-task queue drained against an executor.

    Use ``async with TaskQueue.open(path, executor, config) as queue:`` (which starts the
    workers and shuts them down on exit), or call :meth:`run` and :meth:`shutdown` yourself.

    Args:
        store: where tasks live.
        executor: runs one attempt (the HIS adapter's task runner).
        config: rate, concurrency, attempts, backoff, leases.
        owner: this process's lease owner id (random by default).
        rng: randomness for backoff jitter (tests pass a seeded one).
        limiter: the drain-rate bucket (built from ``config`` by default).
        owns_store: close ``store`` when the queue closes.
    """

    def __init__(
        self,
        store: TaskStore,
        executor: Executor,
        config: QueueConfig,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        limiter: TokenBucket | None = None,
        owns_store: bool = False,
    ) -> None:
        self._store = store
        self._executor = executor
        self._config = config
        self._owner = owner or uuid.uuid4().hex
        self._rng = rng or random.Random()
        self._limiter = limiter or TokenBucket(config.drain_rate_per_second, config.burst)
        self._owns_store = owns_store
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_generation = 0
        self._progress = asyncio.Event()
        self._finished = asyncio.Event()
        self._work: asyncio.Queue[Task | None] = asyncio.Queue()
        self._outcomes: list[Outcome] = []
        self._claimed = 0  # claimed by this queue and not yet recorded
        self._runner: asyncio.Task[None] | None = None
        self._started = False

    @classmethod
    def open(
        cls,
        path: Path | str,
        executor: Executor,
        config: QueueConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> TaskQueue:
        """A queue on the SQLite file ``path`` (created if missing), owning its store."""
        return cls(TaskStore.open(path, clock=clock), executor, config, rng=rng, owns_store=True)

    @property
    def store(self) -> TaskStore:
        """The underlying store (reads for servicers and operators)."""
        return self._store

    @property
    def config(self) -> QueueConfig:
        """The queue's settings."""
        return self._config

    def reconfigure(self, config: QueueConfig) -> None:
        """Takes new settings (a profile applied live) from the next claim and attempt on.

        The drain rate and burst take effect at once (a new bucket); the number of workers
        and the lease length are read when :meth:`run` starts and cannot change here.

        Raises:
            ValueError: ``max_concurrency`` or ``lease_seconds`` differ.
        """
        for name in ("max_concurrency", "lease_seconds"):
            if getattr(config, name) != getattr(self._config, name):
                raise ValueError(f"{name}: read at start; restart the queue to change it")
        old, self._config = self._config, config
        if (old.drain_rate_per_second, old.burst) != (config.drain_rate_per_second, config.burst):
            self._limiter = TokenBucket(config.drain_rate_per_second, config.burst)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the store (idempotent); :meth:`run` and ``async with`` call it."""
        if not self._started:
            await self._store.start()
            self._started = True

    async def run(self) -> None:
        """Run the workers until :meth:`shutdown`; the first worker failure ends the run."""
        await self.start()
        keeper = asyncio.create_task(self._keep_leases(), name="tasks-lease-keeper")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(), name="tasks-pump")
                for index in range(self._config.max_concurrency):
                    group.create_task(self._worker(), name=f"tasks-worker-{index}")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def shutdown(self, *, grace_seconds: float = 5.0) -> None:
        """Stop claiming; let running attempts finish for ``grace_seconds``, then cancel them.

        A cancelled attempt's task goes back to QUEUED (it will be attempted again).
        """
        self._stopping.set()
        self._wake.set()
        runner = self._runner
        if runner is None:
            return
        done, _ = await asyncio.wait({runner}, timeout=grace_seconds)
        if not done:
            runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        self._runner = None

    async def aclose(self) -> None:
        """Shut down and release the store."""
        try:
            await self.shutdown()
        finally:
            if self._owns_store:
                await self._store.aclose()

    async def __aenter__(self) -> TaskQueue:
        await self.start()
        self._runner = asyncio.create_task(self.run(), name="tasks-queue")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the servicer's calls ------------------------------------------------------------

    async def submit(
        self,
        *,
        idempotency_key: str,
        kind: str,
        payload: bytes,
        priority: int = 0,
        deadline: float | None = None,
        trace_id: str = "",
    ) -> tuple[Task, bool]:
        """Accept a task (SubmitTask); a repeat of the key returns the original task.

        Args:
            idempotency_key: the cloud's key for the submission.
            kind: kind of work (the profile's operation name, e.g.
                ``"retrieve_archived_report"``).
            payload: what to do (the serialised spec).
            priority: 0 (lowest) to 9.
            deadline: epoch seconds after which no attempt starts; default from config.
            trace_id: W3C trace id of the submission.

        Returns:
            The task and whether it was created now.

        Raises:
            ValueError: empty key or kind, or priority outside 0..9.
            TaskKeyReused: the key was used with another kind or payload.
            QueueFull: the queue is at its configured limit.
        """
        if not idempotency_key or not kind:
            raise ValueError("idempotency_key and kind are required")
        if not 0 <= priority <= 9:
            raise ValueError("priority must be 0..9")
        if deadline is None:
            deadline = self._store.clock() + self._config.default_lifetime_seconds
        task, created = await self._store.submit(
            idempotency_key=idempotency_key,
            kind=kind,
            payload=payload,
            priority=priority,
            max_attempts=self._config.max_attempts,
            deadline=deadline,
            queue_limit=self._config.queue_limit,
            trace_id=trace_id,
        )
        if created:
            self._notify()
        return task, created

    async def get(self, task_id: str) -> Task | None:
        """The task with ``task_id`` (GetTask)."""
        return await self._store.get(task_id)

    async def get_by_key(self, idempotency_key: str) -> Task | None:
        """The task submitted under ``idempotency_key`` (GetTask by key)."""
        return await self._store.get_by_key(idempotency_key)

    async def retry(self, task_id: str, *, deadline: float | None = None) -> Task:
        """Requeue a PARKED or FAILED task with ``retry_budget`` more attempts (RetryTask)."""
        task = await self._store.retry(task_id, budget=self._config.retry_budget, deadline=deadline)
        self._notify()
        return task

    async def stats(self) -> QueueStats:
        """Backlog, oldest age and the rest, for GetEdgeInfo."""
        return await self._store.stats(drain_rate_per_second=self._config.drain_rate_per_second)

    async def pending_results(self, *, limit: int = 100) -> list[Task]:
        """Finished tasks whose result the cloud has not acknowledged yet."""
        return await self._store.pending_results(limit=limit)

    async def ack(self, task_ids: Sequence[str]) -> int:
        """The cloud has these results: delete their bodies."""
        return await self._store.ack(task_ids)

    async def list_tasks(
        self,
        *,
        states: Iterable[TaskState] = (),
        kinds: Iterable[str] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[tuple[int, Task]]:
        """Tasks newest first (ListTasks); the sequence numbers serve as page tokens."""
        return await self._store.list_tasks(
            states=states, kinds=kinds, limit=limit, before_seq=before_seq
        )

    async def wait_finished(self) -> None:
        """Wait until an attempt has finished a task since the last call returned.

        What the uplink waits on (under its own timeout) before looking for results to
        push, rather than polling the store.
        """
        await self._finished.wait()
        self._finished.clear()

    async def wait_idle(self) -> None:
        """Return once no task is QUEUED or RUNNING (tests, drain-before-upgrade)."""
        while True:
            self._progress.clear()
            # While this queue holds claimed tasks it is not idle: spare the database.
            if self._claimed == 0 and await self._store.open_count() == 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.idle_poll_seconds):
                    await self._progress.wait()

    # -- workers -----------------------------------------------------------------------

    def _notify(self) -> None:
        self._wake_generation += 1
        self._wake.set()

    async def _pump(self) -> None:
        """Record finished attempts and claim new tasks, one transaction at a time."""
        config, store = self._config, self._store
        # Claimed tasks wait in a small buffer (about 20 ms of work at the drain rate) so a
        # worker never waits for the database.
        capacity = 2 * config.max_concurrency + math.ceil(config.drain_rate_per_second / 50)
        try:
            while True:
                generation = self._wake_generation
                batch, self._outcomes = self._outcomes, []
                stopping = self._stopping.is_set()
                if stopping:
                    await self._release_unstarted()
                want = 0 if stopping else max(0, capacity - self._claimed)
                claimed: list[Task] = []
                if batch or want:
                    recorded, claimed = await store.exchange(
                        owner=self._owner,
                        outcomes=batch,
                        claim=want,
                        lease_seconds=config.lease_seconds,
                    )
                    if recorded < len(batch):
                        log.warning(
                            "%d task outcomes came after their lease was lost",
                            len(batch) - recorded,
                        )
                    self._claimed += len(claimed) - len(batch)
                    for task in claimed:
                        self._work.put_nowait(task)
                    if batch:
                        self._progress.set()
                        if any(o.state in _FINAL for o in batch):
                            self._finished.set()
                if stopping and self._claimed == 0 and not self._outcomes:
                    for _ in range(config.max_concurrency):
                        self._work.put_nowait(None)
                    return
                if self._outcomes or (want and len(claimed) == want):
                    continue
                timeout = config.idle_poll_seconds
                if want and not stopping:
                    due = await store.next_due()
                    if due is not None:
                        timeout = max(_MIN_WAIT, min(timeout, due - store.clock()))
                self._wake.clear()
                if self._wake_generation != generation or self._outcomes:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        except asyncio.CancelledError:
            await asyncio.shield(self._flush_on_cancel())
            raise

    async def _flush_on_cancel(self) -> None:
        await self._release_unstarted()
        pending, self._outcomes = self._outcomes, []
        if pending:
            await self._write_directly(pending)

    async def _release_unstarted(self) -> None:
        unstarted: list[str] = []
        while not self._work.empty():
            task = self._work.get_nowait()
            if task is not None:
                unstarted.append(task.task_id)
        if unstarted:
            await self._store.release(unstarted, owner=self._owner)
            self._claimed -= len(unstarted)

    async def _worker(self) -> None:
        while True:
            task = await self._work.get()
            if task is None:
                return
            try:
                outcome = await self._attempt(task)
            except asyncio.CancelledError:
                # Shutting down past the grace period: the task goes back to the queue.
                await asyncio.shield(
                    self._write_directly(
                        [
                            Outcome(
                                task_id=task.task_id,
                                state=TaskState.QUEUED,
                                error=TaskError(
                                    code="CANCELLED", reason="", message="edge shutting down"
                                ),
                            )
                        ]
                    )
                )
                raise
            self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        # The worker moves on at once; the pump makes the outcome durable with the next
        # group commit. Should the process die first, the task is still RUNNING under an
        # expiring lease and is attempted again (at least once; the HIS dedupes by key).
        self._outcomes.append(outcome)
        self._wake.set()

    async def _write_directly(self, outcomes: list[Outcome]) -> None:
        try:
            await self._store.exchange(
                owner=self._owner, outcomes=outcomes, claim=0, lease_seconds=0
            )
        except Exception:
            # The leases will expire and the tasks will be attempted again: at least once.
            log.exception("recording %d task outcomes failed", len(outcomes))

    async def _keep_leases(self) -> None:
        interval = self._config.lease_seconds / 3.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._store.renew_leases(
                    owner=self._owner, lease_seconds=self._config.lease_seconds
                )
            except Exception:
                # A missed renewal only risks a duplicate attempt, which the HIS dedupes by
                # key; keep the workers going.
                log.exception("renewing task leases failed")

    async def _attempt(self, task: Task) -> Outcome:
        """Run one attempt of a claimed task and decide what becomes of it."""
        store, config = self._store, self._config
        if store.clock() >= task.deadline:
            return Outcome(
                task_id=task.task_id,
                state=TaskState.FAILED,
                error=TaskError(
                    code="DEADLINE_EXCEEDED", reason="", message="the task's deadline passed"
                ),
            )
        if task.attempts > task.max_attempts:
            # The process died during the last allowed attempt.
            return Outcome(
                task_id=task.task_id,
                state=TaskState.PARKED,
                error=TaskError(
                    code="ABORTED", reason="", message="attempts exhausted (interrupted)"
                ),
            )
        await self._limiter.acquire()
        run = TaskRun(
            task_id=task.task_id,
            idempotency_key=task.idempotency_key,
            kind=task.kind,
            payload=task.payload,
            attempt=task.attempts,
            deadline=task.deadline,
            trace_id=task.trace_id,
        )
        try:
            async with asyncio.timeout(config.attempt_timeout_seconds):
                result = await self._executor(run)
        except PermanentTaskError as err:
            return Outcome(
                task_id=task.task_id,
                state=TaskState.FAILED,
                error=TaskError(code=err.code, reason=err.reason, message=err.message),
            )
        except (TransientTaskError, TimeoutError, ConnectionError) as err:
            code = err.code if isinstance(err, TransientTaskError) else "UNAVAILABLE"
            error = TaskError(code=code, reason="", message=str(err) or type(err).__name__)
            if task.attempts >= task.max_attempts:
                return Outcome(task_id=task.task_id, state=TaskState.PARKED, error=error)
            delay = backoff_delay(config, task.attempts, self._rng)
            return Outcome(
                task_id=task.task_id,
                state=TaskState.QUEUED,
                error=error,
                next_attempt_at=store.clock() + delay,
            )
        except Exception as err:
            log.exception("task %s: unclassified error; parking it", task.task_id)
            return Outcome(
                task_id=task.task_id,
                state=TaskState.PARKED,
                error=TaskError(code="UNKNOWN", reason="", message=type(err).__name__),
            )
        return Outcome(task_id=task.task_id, state=TaskState.SUCCEEDED, result=result)
