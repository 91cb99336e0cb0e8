"""Errors of the pending-task queue, and the verdicts an executor raises.

::

    TaskQueueError                  (code, reason)
    ├── QueueFull                   RESOURCE_EXHAUSTED   QUEUE_FULL
    ├── TaskKeyReused               INVALID_ARGUMENT     IDEMPOTENCY_KEY_REUSED
    ├── TaskNotFound                NOT_FOUND            TASK_NOT_FOUND
    ├── TaskNotRetryable            FAILED_PRECONDITION  TASK_NOT_RETRYABLE
    └── TaskStoreDamaged            DATA_LOSS            TASK_STORE_DAMAGED

    TransientTaskError   raised by an executor: retry later (backoff), park after N attempts
    PermanentTaskError   raised by an executor: retrying cannot help; the task FAILS
"""

from __future__ import annotations

__all__ = [
    "PermanentTaskError",
    "QueueFull",
    "TaskKeyReused",
    "TaskNotFound",
    "TaskNotRetryable",
    "TaskQueueError",
    "TaskStoreDamaged",
    "TransientTaskError",
]


class TaskQueueError(Exception):
    """Base of the queue's errors.

    Attributes:
        code: ``google.rpc.Code`` name of the status the caller should get.
        reason: ``ErrorInfo.reason``.
    """

    code = "INTERNAL"
    reason = ""


class QueueFull(TaskQueueError):
    """The queue holds its configured limit of waiting tasks.

    Attributes:
        retry_after_seconds: suggested delay (for ``google.rpc.RetryInfo``).
    """

    code = "RESOURCE_EXHAUSTED"
    reason = "QUEUE_FULL"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class TaskKeyReused(TaskQueueError):
    """A submission reused an idempotency key with another kind or payload."""

    code = "INVALID_ARGUMENT"
    reason = "IDEMPOTENCY_KEY_REUSED"


class TaskNotFound(TaskQueueError):
    """No task has that id."""

    code = "NOT_FOUND"
    reason = "TASK_NOT_FOUND"


class TaskNotRetryable(TaskQueueError):
    """RetryTask on a task that succeeded."""

    code = "FAILED_PRECONDITION"
    reason = "TASK_NOT_RETRYABLE"


class TaskStoreDamaged(TaskQueueError):
    """SQLite found the task store's file damaged: no call can use it until it is restored.

    Raised by the call that found the damage and by every later one (nothing more is
    written into a damaged store).
    """

    code = "DATA_LOSS"
    reason = "TASK_STORE_DAMAGED"

    def __init__(self, detail: str) -> None:
        super().__init__("this edge's task store is damaged; its operator must restore it")
        self.detail = detail


class TransientTaskError(Exception):
    """Raised by an executor: this attempt failed but a later one may succeed.

    Args:
        message: what went wrong, without patient data.
        code: ``google.rpc.Code`` name recorded as the task's last error.
    """

    def __init__(self, message: str, *, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class PermanentTaskError(Exception):
    """Raised by an executor: retrying cannot help (e.g. the report does not exist).

    Args:
        message: what went wrong, without patient data.
        code: ``google.rpc.Code`` name recorded as the task's last error.
        reason: ``ErrorInfo.reason``, if any.
    """

    def __init__(
        self, message: str, *, code: str = "FAILED_PRECONDITION", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
