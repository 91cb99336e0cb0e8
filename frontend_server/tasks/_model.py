"""Tasks as the queue stores them, what an executor is given, and queue statistics."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["Executor", "KindStats", "QueueStats", "Task", "TaskError", "TaskRun", "TaskState"]


class TaskState(enum.StrEnum):
    """Lifecycle of a task (the contract's ``TaskState``)."""

    QUEUED = "QUEUED"
    """Waiting for its first attempt, or for ``next_attempt_at`` after a failed one."""
    RUNNING = "RUNNING"
    """Claimed by a worker under a lease."""
    SUCCEEDED = "SUCCEEDED"
    """Finished with a result. Final."""
    FAILED = "FAILED"
    """Finished without a result; retrying cannot help. Final unless retried by an operator."""
    PARKED = "PARKED"
    """Set aside after ``max_attempts`` or an unclassified error; waits for an operator."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskError:
    """The error of a task's last failed attempt."""

    code: str
    """``google.rpc.Code`` name."""
    reason: str
    """``ErrorInfo.reason``, or empty."""
    message: str
    """What went wrong, without patient data."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """A task as stored."""

    task_id: str
    """Id the edge assigned."""
    idempotency_key: str
    """Key of the SubmitTask that created it."""
    kind: str
    """Kind of work, e.g. ``"retrieve_archived_report"``."""
    payload: bytes
    """What to do, as submitted (the serialised spec)."""
    priority: int
    """0 (lowest) to 9."""
    state: TaskState
    """Lifecycle state."""
    attempts: int
    """Attempts started so far."""
    max_attempts: int
    """Attempts allowed before parking."""
    last_error: TaskError | None
    """Error of the last failed attempt."""
    result: bytes | None
    """Outcome once SUCCEEDED (until the cloud acknowledges it)."""
    create_time: float
    """When accepted (epoch seconds)."""
    start_time: float | None
    """When the current or last attempt started."""
    update_time: float
    """When the state last changed."""
    complete_time: float | None
    """When it reached SUCCEEDED, FAILED or PARKED."""
    next_attempt_at: float
    """When a QUEUED task may next be attempted."""
    deadline: float
    """After this moment no attempt starts; the task fails."""
    trace_id: str
    """W3C trace id of the SubmitTask call."""
    delivered_time: float | None
    """When the cloud acknowledged the result."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskRun:
    """What an executor is given for one attempt."""

    task_id: str
    """The task."""
    idempotency_key: str
    """Pass it to the HIS so a repeated attempt (after a crash) can be deduplicated."""
    kind: str
    """Kind of work."""
    payload: bytes
    """What to do."""
    attempt: int
    """1 for the first attempt."""
    deadline: float
    """Epoch seconds after which the result is of no use."""
    trace_id: str
    """W3C trace id to put on the attempt's spans."""


Executor = Callable[[TaskRun], Awaitable[bytes]]
"""Runs one attempt against the HIS; returns the result to store.

Raise :class:`TransientTaskError` (or ``TimeoutError`` / ``ConnectionError``) to retry later,
:class:`PermanentTaskError` to fail the task; any other exception parks it.
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class KindStats:
    """Queue statistics for one kind."""

    backlog: int
    """Tasks waiting (QUEUED)."""
    running: int
    """Tasks being attempted."""
    parked: int
    """Tasks set aside for an operator."""
    oldest_queued_age_seconds: float
    """Age of the oldest waiting task; 0 when none."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueueStats:
    """Queue statistics (the contract's ``QueueStats``)."""

    backlog: int
    """Tasks waiting (QUEUED), all kinds."""
    running: int
    """Tasks being attempted."""
    parked: int
    """Tasks set aside for an operator."""
    oldest_queued_age_seconds: float
    """Age of the oldest waiting task (dwell time); 0 when none."""
    succeeded_last_hour: int
    """Tasks that succeeded in the last hour."""
    failed_last_hour: int
    """Tasks that failed or were parked in the last hour."""
    drain_rate_per_second: float
    """The configured drain rate."""
    by_kind: Mapping[str, KindStats]
    """The same per kind."""
