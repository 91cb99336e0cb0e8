"""One retry policy: which errors are worth another attempt, and how long to wait before it.

Every retry in hplus goes through :class:`RetryPolicy`: the edge's reconnect backoff,
the pending-task queue's schedule, the database dialect's response polling and the
registry's retry of a concurrent label write. In-process retry loops run on tenacity
(:meth:`RetryPolicy.retrying`); the two waits that are not a loop in one coroutine — a
reconnect that a shutdown interrupts, a task attempt scheduled in the queue's database —
take their delays from :meth:`RetryPolicy.delay`, so every caller draws from the same
schedule.

The schedule is exponential backoff with *full jitter*: after the n-th failure the delay
is uniform in ``[0, min(maximum, initial * multiplier ** (n - 1))]`` (tenacity's
``wait_random_exponential``, drawn from a random source the caller may seed). Full jitter
spreads 2,000 edges that lost the same node over the whole window instead of letting them
return in lock-step.

Which errors to retry is decided by a named predicate, never by a bare ``except``:
:func:`is_transient` for gRPC calls (``UNAVAILABLE`` always; ``RESOURCE_EXHAUSTED`` and
``ABORTED`` only when the call is idempotent). Servicers never retry: the caller's policy
and ledger must see every attempt.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import tenacity

__all__ = ["RetryPolicy", "is_transient", "status_code"]

_ALWAYS_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE})
_TRANSIENT_IF_IDEMPOTENT = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


def status_code(err: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code an error carries, if any.

    Reads ``code()`` of a ``grpc.RpcError`` that is also a call (``grpc.aio.AioRpcError``,
    the sync stubs' errors), or a ``code`` attribute holding a ``grpc.StatusCode`` (our own
    error classes).

    Args:
        err: any exception.

    Returns:
        The status code, or ``None`` for an error that carries none.
    """
    code: object = getattr(err, "code", None)
    if isinstance(err, grpc.RpcError) and callable(code):
        code = code()
    return code if isinstance(code, grpc.StatusCode) else None


def is_transient(err: BaseException, *, idempotent: bool) -> bool:
    """Whether a failed gRPC call is worth another attempt.

    * ``UNAVAILABLE``: always. The server was not reached, or refused before doing
      anything (shutting down, edge offline): the call had no effect.
    * ``RESOURCE_EXHAUSTED`` (back-pressure, a quota) and ``ABORTED`` (a concurrency
      conflict): only for an idempotent call. The server may have done part of the work,
      and only an idempotent call may be repeated without doing it twice.
    * Anything else, and errors without a status code: never. ``DEADLINE_EXCEEDED`` is
      not transient here: the caller's deadline is spent, and a write may have happened.

    Use ``functools.partial(is_transient, idempotent=...)`` as a one-argument predicate.

    Args:
        err: the error a call raised.
        idempotent: whether repeating the call cannot do its work twice (reads; writes
            that carry an idempotency key).

    Returns:
        True when another attempt may succeed and is safe.
    """
    code = status_code(err)
    if code in _ALWAYS_TRANSIENT:
        return True
    return idempotent and code in _TRANSIENT_IF_IDEMPOTENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long to wait between attempts, and when to give up."""

    initial: float = 0.1
    """Ceiling of the first delay, seconds."""
    maximum: float = 10.0
    """Largest ceiling, seconds."""
    multiplier: float = 2.0
    """Growth of the ceiling per failure."""
    jitter: bool = True
    """Full jitter (the delay is uniform below the ceiling); False: the ceiling itself,
    for a caller that waits on its own work (polling) rather than on a shared server."""
    deadline: float | None = 30.0
    """Give up once this many seconds passed since the first attempt; ``None``: never
    (the caller bounds the loop another way, e.g. with ``asyncio.timeout``)."""
    attempts: int | None = None
    """Give up after this many attempts; ``None``: no limit but the deadline."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.initial <= self.maximum:
            problems.append("need 0 < initial <= maximum")
        if not self.multiplier >= 1:
            problems.append("need multiplier >= 1")
        if self.deadline is not None and not self.deadline > 0:
            problems.append("need deadline > 0 (or None)")
        if self.attempts is not None and self.attempts < 1:
            problems.append("need attempts >= 1 (or None)")
        if problems:
            raise ValueError(f"retry policy: {'; '.join(problems)}")

    def window(self, failures: int) -> float:
        """The ceiling of the delay after ``failures`` consecutive failures (1 or more).

        Args:
            failures: how many attempts failed in a row (the first retry follows 1).

        Returns:
            ``min(maximum, initial * multiplier ** (failures - 1))``, without overflowing
            however many failures there were.
        """
        exponent = max(0, failures - 1)
        if self.multiplier > 1 and exponent > math.log(
            self.maximum / self.initial, self.multiplier
        ):
            return self.maximum
        return min(self.maximum, self.initial * self.multiplier**exponent)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The delay before the next attempt after ``failures`` consecutive failures.

        Args:
            failures: how many attempts failed in a row (1 or more).
            rng: the random source of the jitter (tests pass a seeded one).

        Returns:
            Uniform in ``[0, window(failures)]`` with jitter, else ``window(failures)``.
        """
        window = self.window(failures)
        if not self.jitter:
            return window
        return (rng or _RANDOM).uniform(0.0, window)

    def retrying(
        self,
        *,
        retry_on: Callable[[BaseException], bool] | None = None,
        retry_result: Callable[[Any], bool] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> tenacity.AsyncRetrying:
        """A tenacity retrying object that follows this policy.

        Use it as ``await policy.retrying(retry_on=...)(fn, *args)`` or with ``async for
        attempt in policy.retrying(...): with attempt: ...``. When the policy gives up, the
        last error is raised as it was (``reraise``); a result still matching
        ``retry_result`` is returned as it is.

        Args:
            retry_on: which errors to retry (e.g. :func:`is_transient`); others are raised
                at once. ``None``: no error is retried.
            retry_result: which results to retry (e.g. "no response yet").
            rng: the random source of the jitter (tests pass a seeded one).
            sleep: how to wait (tests pass a fake clock's); default ``asyncio.sleep``.

        Returns:
            An ``AsyncRetrying`` with this policy's wait and stop.
        """
        retry: tenacity.retry_base = tenacity.retry_never
        if retry_on is not None:
            retry = retry | tenacity.retry_if_exception(retry_on)
        if retry_result is not None:
            retry = retry | tenacity.retry_if_result(retry_result)
        stop: tenacity.stop.stop_base = tenacity.stop_never
        if self.deadline is not None:
            stop = stop | tenacity.stop_after_delay(self.deadline)
        if self.attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.attempts)
        options: dict[str, Any] = {}
        if sleep is not None:
            options["sleep"] = sleep
        return tenacity.AsyncRetrying(
            retry=retry,
            wait=_PolicyWait(self, rng),
            stop=stop,
            reraise=True,
            retry_error_callback=_last_result,
            **options,
        )


_RANDOM = random.Random()


class _PolicyWait(tenacity.wait.wait_base):
    """tenacity's wait strategy for a policy: :meth:`RetryPolicy.delay` of the attempt."""

    def __init__(self, policy: RetryPolicy, rng: random.Random | None) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self._policy.delay(retry_state.attempt_number, self._rng)


def _last_result(retry_state: tenacity.RetryCallState) -> Any:
    # Giving up on a result (not an error): return it for the caller to judge, instead of
    # tenacity's RetryError. Giving up on an error re-raises it (`reraise=True`).
    outcome = retry_state.outcome
    assert outcome is not None
    return outcome.result()
