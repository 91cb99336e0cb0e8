"""Settings of the pending-task queue (the profile's ``[tasks]`` table)."""

from __future__ import annotations

import dataclasses

__all__ = ["QueueConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueueConfig:
    """How fast and how carefully the queue drains against the HIS."""

    drain_rate_per_second: float = 5.0
    """Attempts started per second, at most (a token bucket refilled at this rate)."""
    burst: int = 1
    """Token bucket size: attempts that may start back to back after an idle spell."""
    max_concurrency: int = 2
    """Attempts running at the same time, at most."""
    max_attempts: int = 5
    """Attempts before a task is parked for an operator."""
    backoff_initial_seconds: float = 1.0
    """Ceiling of the first retry delay (full jitter: the delay is uniform below it)."""
    backoff_multiplier: float = 2.0
    """Growth of the ceiling per failed attempt."""
    backoff_max_seconds: float = 300.0
    """Largest ceiling."""
    lease_seconds: float = 30.0
    """How long a claimed task stays claimed without a heartbeat; after that (the process
    died) another worker may take it again."""
    attempt_timeout_seconds: float = 60.0
    """Longest one attempt may run; a timeout counts as a transient failure."""
    queue_limit: int = 100_000
    """Tasks waiting at most; beyond it a submission is refused (RESOURCE_EXHAUSTED)."""
    default_lifetime_seconds: float = 24 * 3600.0
    """Deadline of a task submitted without one, from submission."""
    retry_budget: int = 5
    """Attempts an operator's RetryTask adds to ``max_attempts``."""
    idle_poll_seconds: float = 1.0
    """How often idle workers look for tasks whose retry delay has passed."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.drain_rate_per_second > 0:
            problems.append("drain_rate_per_second must be > 0")
        for name in ("burst", "max_concurrency", "max_attempts", "queue_limit", "retry_budget"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in (
            "backoff_initial_seconds",
            "backoff_max_seconds",
            "lease_seconds",
            "attempt_timeout_seconds",
            "default_lifetime_seconds",
            "idle_poll_seconds",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0")
        if self.backoff_multiplier < 1:
            problems.append("backoff_multiplier must be >= 1")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            problems.append("backoff_initial_seconds must be <= backoff_max_seconds")
        if problems:
            raise ValueError("; ".join(problems))
