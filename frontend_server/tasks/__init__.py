"""The pending-task queue: durable (SQLite), rate-limited, crash-safe.

A servicer accepts non-real-time work with :meth:`TaskQueue.submit` and answers at once;
the queue drains it against an :data:`Executor` (the HIS adapter's task runner) at the
profile's rate and concurrency, retries with backoff, parks poison tasks, and keeps results
until the cloud acknowledges them.
"""

from __future__ import annotations

from frontend_server.tasks._config import QueueConfig
from frontend_server.tasks._errors import (
    PermanentTaskError,
    QueueFull,
    TaskKeyReused,
    TaskNotFound,
    TaskNotRetryable,
    TaskQueueError,
    TaskStoreDamaged,
    TransientTaskError,
)
from frontend_server.tasks._limiter import TokenBucket
from frontend_server.tasks._model import (
    Executor,
    KindStats,
    QueueStats,
    Task,
    TaskError,
    TaskRun,
    TaskState,
)
from frontend_server.tasks._queue import TaskQueue, backoff_delay
from frontend_server.tasks._store import TASK_STORE, TaskStore

__all__ = [
    "TASK_STORE",
    "Executor",
    "KindStats",
    "PermanentTaskError",
    "QueueConfig",
    "QueueFull",
    "QueueStats",
    "Task",
    "TaskError",
    "TaskKeyReused",
    "TaskNotFound",
    "TaskNotRetryable",
    "TaskQueue",
    "TaskQueueError",
    "TaskRun",
    "TaskState",
    "TaskStore",
    "TaskStoreDamaged",
    "TokenBucket",
    "TransientTaskError",
    "backoff_delay",
]
