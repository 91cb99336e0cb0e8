from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from frontend_server.tasks import (
    PermanentTaskError,
    QueueConfig,
    QueueFull,
    TaskKeyReused,
    TaskNotRetryable,
    TaskQueue,
    TaskRun,
    TaskState,
    TaskStore,
    TransientTaskError,
    backoff_delay,
)

FAST = {"backoff_initial_seconds": 0.001, "backoff_max_seconds": 0.002, "idle_poll_seconds": 0.05}


class FakeExecutor:
    """Records each call's start time and runs a scripted behaviour per call."""

    def __init__(self, behaviour: Callable[[TaskRun], Awaitable[bytes]] | None = None) -> None:
        self.calls: list[TaskRun] = []
        self.starts: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._behaviour = behaviour

    async def __call__(self, run: TaskRun) -> bytes:
        self.starts.append(time.monotonic())
        self.calls.append(run)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._behaviour is not None:
                return await self._behaviour(run)
            await asyncio.sleep(0)
            return b"ok:" + run.idempotency_key.encode()
        finally:
            self.in_flight -= 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    opened = TaskStore.open(tmp_path / "tasks.db")
    await opened.start()
    yield opened
    await opened.aclose()


async def submit_many(queue: TaskQueue, count: int, **kw: object) -> None:
    for i in range(count):
        await queue.submit(
            idempotency_key=f"k{i}", kind="retrieve_archived_report", payload=b"%d" % i, **kw
        )  # type: ignore[arg-type]


async def test_a_burst_of_1000_never_exceeds_the_rate(store: TaskStore) -> None:
    rate, burst = 500.0, 1
    config = QueueConfig(drain_rate_per_second=rate, burst=burst, max_concurrency=4, **FAST)
    executor = FakeExecutor()
    queue = TaskQueue(store, executor, config)
    await submit_many(queue, 1000)
    async with queue:
        await queue.wait_idle()
    assert len(executor.calls) == 1000
    assert sorted(r.idempotency_key for r in executor.calls) == sorted(f"k{i}" for i in range(1000))
    assert executor.max_in_flight <= 4
    starts = executor.starts
    # In every interval [t_i, t_j], at most burst + rate * (t_j - t_i) calls started. The
    # executor reads the clock some time after its token was taken, and on a loaded machine
    # that delay varies: 50 ms of slack (25 calls at this rate). Without the limiter the
    # 1,000 calls start within a fraction of a second, hundreds over.
    slack = 0.05
    worst = 0.0
    for i, j in itertools.combinations(range(len(starts)), 2):
        excess = (j - i + 1) - (burst + rate * (starts[j] - starts[i] + slack))
        worst = max(worst, excess)
    assert worst <= 0, f"rate exceeded by {worst:.2f} calls"
    elapsed = starts[-1] - starts[0]
    # At the rate, the last call starts ~2 s after the first; the first may start late.
    assert (1000 - burst) / rate - 0.5 <= elapsed < 30.0
    stats = await queue.stats()
    assert (stats.backlog, stats.running, stats.succeeded_last_hour) == (0, 0, 1000)


async def test_poison_task_is_parked_after_n_attempts(store: TaskStore) -> None:
    async def always_down(run: TaskRun) -> bytes:
        raise TransientTaskError("HIS archive offline")

    executor = FakeExecutor(always_down)
    queue = TaskQueue(store, executor, QueueConfig(max_attempts=3, **FAST))
    task, _ = await queue.submit(idempotency_key="poison", kind="k", payload=b"")
    async with queue:
        await queue.wait_idle()
    parked = await queue.get(task.task_id)
    assert parked is not None
    assert parked.state is TaskState.PARKED
    assert parked.attempts == 3
    assert [r.attempt for r in executor.calls] == [1, 2, 3]
    assert parked.last_error is not None
    assert parked.last_error.message == "HIS archive offline"
    assert all(r.idempotency_key == "poison" for r in executor.calls)
    assert (await queue.stats()).parked == 1


async def test_permanent_and_unclassified_errors(store: TaskStore) -> None:
    async def behaviour(run: TaskRun) -> bytes:
        if run.idempotency_key == "gone":
            raise PermanentTaskError("no such report", code="NOT_FOUND")
        raise RuntimeError("adapter bug")

    executor = FakeExecutor(behaviour)
    queue = TaskQueue(store, executor, QueueConfig(max_attempts=5, **FAST))
    gone, _ = await queue.submit(idempotency_key="gone", kind="k", payload=b"")
    bug, _ = await queue.submit(idempotency_key="bug", kind="k", payload=b"")
    async with queue:
        await queue.wait_idle()
    failed, parked = await queue.get(gone.task_id), await queue.get(bug.task_id)
    assert failed is not None
    assert failed.state is TaskState.FAILED
    assert failed.last_error is not None
    assert failed.last_error.code == "NOT_FOUND"
    assert parked is not None
    assert parked.state is TaskState.PARKED
    assert len(executor.calls) == 2  # neither was retried


async def test_operator_retry_gives_a_fresh_budget(store: TaskStore) -> None:
    outcomes = iter([TransientTaskError("down"), TransientTaskError("down")])

    async def flaky(run: TaskRun) -> bytes:
        error = next(outcomes, None)
        if error is not None:
            raise error
        return b"report"

    queue = TaskQueue(
        store, FakeExecutor(flaky), QueueConfig(max_attempts=2, retry_budget=2, **FAST)
    )
    task, _ = await queue.submit(idempotency_key="t", kind="k", payload=b"")
    async with queue:
        await queue.wait_idle()
        parked = await queue.get(task.task_id)
        assert parked is not None
        assert parked.state is TaskState.PARKED
        requeued = await queue.retry(task.task_id)
        assert requeued.state is TaskState.QUEUED
        assert requeued.max_attempts == 4
        await queue.wait_idle()
    done = await queue.get(task.task_id)
    assert done is not None
    assert done.state is TaskState.SUCCEEDED
    assert done.attempts == 3
    with pytest.raises(TaskNotRetryable):
        await queue.retry(task.task_id)


async def test_backoff_is_stored_durably_and_respected(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = TaskStore.open(tmp_path / "t.db", clock=lambda: now[0])
    await store.start()
    calls = 0
    attempted = asyncio.Event()

    async def down(run: TaskRun) -> bytes:
        nonlocal calls
        calls += 1
        attempted.set()
        raise TransientTaskError("down")

    config = QueueConfig(
        backoff_initial_seconds=60.0, backoff_max_seconds=60.0, idle_poll_seconds=0.01
    )
    queue = TaskQueue(store, down, config, rng=random.Random(7))
    task, _ = await queue.submit(idempotency_key="t", kind="k", payload=b"")
    worker = asyncio.create_task(queue.run())
    await attempted.wait()
    await queue.shutdown()
    await worker
    stored = await store.get(task.task_id)
    assert stored is not None
    assert stored.state is TaskState.QUEUED
    assert calls == 1
    assert now[0] <= stored.next_attempt_at <= now[0] + 60.0
    assert stored.next_attempt_at == now[0] + backoff_delay(config, 1, random.Random(7))
    assert await store.claim(owner="x", lease_seconds=1) is None  # not due yet
    now[0] = stored.next_attempt_at
    claimed = await store.claim(owner="x", lease_seconds=1)
    assert claimed is not None
    assert claimed.attempts == 2
    await store.aclose()


def test_backoff_grows_and_is_capped() -> None:
    config = QueueConfig(
        backoff_initial_seconds=1.0, backoff_multiplier=2.0, backoff_max_seconds=10.0
    )

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [backoff_delay(config, n, Top()) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]


def test_config_refuses_an_initial_backoff_above_the_largest() -> None:
    with pytest.raises(ValueError, match="backoff_initial_seconds must be <= backoff_max_seconds"):
        QueueConfig(backoff_initial_seconds=600.0, backoff_max_seconds=300.0)


async def test_submit_is_idempotent_and_bounded(store: TaskStore) -> None:
    queue = TaskQueue(store, FakeExecutor(), QueueConfig(queue_limit=2))
    first, created = await queue.submit(idempotency_key="a", kind="k", payload=b"1")
    again, created_again = await queue.submit(idempotency_key="a", kind="k", payload=b"1")
    assert created
    assert not created_again
    assert again.task_id == first.task_id
    with pytest.raises(TaskKeyReused) as info:
        await queue.submit(idempotency_key="a", kind="k", payload=b"2")
    assert info.value.reason == "IDEMPOTENCY_KEY_REUSED"
    await queue.submit(idempotency_key="b", kind="k", payload=b"")
    with pytest.raises(QueueFull) as full:
        await queue.submit(idempotency_key="c", kind="k", payload=b"")
    assert full.value.code == "RESOURCE_EXHAUSTED"
    assert await store.queue_position(first) == 1
    with pytest.raises(ValueError, match="priority"):
        await queue.submit(idempotency_key="d", kind="k", payload=b"", priority=10)


async def test_results_are_kept_until_acknowledged(store: TaskStore) -> None:
    queue = TaskQueue(store, FakeExecutor(), QueueConfig(**FAST))
    await submit_many(queue, 3)
    async with queue:
        await queue.wait_idle()
    pending = await queue.pending_results()
    assert sorted(t.result or b"" for t in pending) == [b"ok:k0", b"ok:k1", b"ok:k2"]
    assert await queue.ack([pending[0].task_id]) == 1
    assert await queue.ack([pending[0].task_id]) == 0
    left = await queue.pending_results()
    assert {t.task_id for t in left} == {t.task_id for t in pending[1:]}
    acked = await queue.get(pending[0].task_id)
    assert acked is not None
    assert acked.result is None
    assert acked.delivered_time is not None


async def test_stats_report_backlog_and_oldest_age(tmp_path: Path) -> None:
    now = [5000.0]
    store = TaskStore.open(tmp_path / "t.db", clock=lambda: now[0])
    await store.start()
    queue = TaskQueue(store, FakeExecutor(), QueueConfig())
    await queue.submit(idempotency_key="a", kind="report", payload=b"")
    now[0] += 30.0
    await queue.submit(idempotency_key="b", kind="record", payload=b"")
    now[0] += 12.0
    stats = await queue.stats()
    assert (stats.backlog, stats.running, stats.parked) == (2, 0, 0)
    assert stats.oldest_queued_age_seconds == 42.0
    assert stats.by_kind["record"].oldest_queued_age_seconds == 12.0
    assert stats.drain_rate_per_second == 5.0
    await store.aclose()


async def test_deadline_passed_fails_without_an_attempt(store: TaskStore) -> None:
    executor = FakeExecutor()
    queue = TaskQueue(store, executor, QueueConfig(**FAST))
    task, _ = await queue.submit(
        idempotency_key="t", kind="k", payload=b"", deadline=time.time() - 1
    )
    async with queue:
        await queue.wait_idle()
    done = await queue.get(task.task_id)
    assert done is not None
    assert done.state is TaskState.FAILED
    assert executor.calls == []
    assert done.last_error is not None
    assert done.last_error.code == "DEADLINE_EXCEEDED"


async def test_higher_priority_runs_first(store: TaskStore) -> None:
    executor = FakeExecutor()
    queue = TaskQueue(store, executor, QueueConfig(max_concurrency=1, **FAST))
    await queue.submit(idempotency_key="low", kind="k", payload=b"", priority=0)
    await queue.submit(idempotency_key="high", kind="k", payload=b"", priority=9)
    await queue.submit(idempotency_key="low2", kind="k", payload=b"", priority=0)
    async with queue:
        await queue.wait_idle()
    assert [r.idempotency_key for r in executor.calls] == ["high", "low", "low2"]


async def test_a_dead_workers_lease_expires_and_the_task_is_retried(store: TaskStore) -> None:
    executor = FakeExecutor()
    queue = TaskQueue(store, executor, QueueConfig(**FAST))
    task, _ = await queue.submit(idempotency_key="t", kind="k", payload=b"")
    claimed = await store.claim(owner="dead-process", lease_seconds=0.05)
    assert claimed is not None
    assert claimed.state is TaskState.RUNNING
    async with queue:
        await queue.wait_idle()
    assert [(r.idempotency_key, r.attempt) for r in executor.calls] == [("t", 2)]
    assert not await store.finish(task.task_id, owner="dead-process", state=TaskState.SUCCEEDED)


async def test_shutdown_requeues_an_interrupted_attempt(store: TaskStore) -> None:
    entered = asyncio.Event()

    async def hangs(run: TaskRun) -> bytes:
        entered.set()
        await asyncio.Event().wait()
        return b""

    queue = TaskQueue(store, hangs, QueueConfig(**FAST))
    task, _ = await queue.submit(idempotency_key="t", kind="k", payload=b"")
    async with queue:
        await entered.wait()
        await queue.shutdown(grace_seconds=0.01)
    after = await store.get(task.task_id)
    assert after is not None
    assert after.state is TaskState.QUEUED
    assert after.attempts == 1
