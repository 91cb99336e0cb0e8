"""The reconnect backoff: the retry policy's full-jitter schedule, reset after a stable period.

The delays come from :class:`mesh.retry.RetryPolicy` (full jitter spreads 2,000 edges
that lost the same node over the whole window instead of letting them return in
lock-step). What is the dialer's own is when the schedule starts over: only after the
tunnel stayed up for ``stable_after``, so a flapping node does not get a fresh fast retry
each time.
"""

from __future__ import annotations

import random

from mesh.retry import RetryPolicy

__all__ = ["Backoff"]


class Backoff:
    """Delays before reconnect attempts.

    Args:
        policy: the schedule (initial and largest window, growth); the dialer never gives
            up, so the policy's deadline and attempts are not used.
        stable_after: a connection that lasted this long resets the window.
        rng: the random source (tests pass a seeded one).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        stable_after: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if stable_after < 0:
            raise ValueError("need stable_after >= 0")
        self.policy = policy
        """The schedule of the delays."""
        self._stable_after = stable_after
        self._rng = rng or random.Random()
        self.failures = 0
        """Consecutive failures since the last reset."""

    def window(self) -> float:
        """The current upper bound of the delay."""
        return self.policy.window(self.failures + 1)

    def next_delay(self, connected_for: float | None = None) -> float:
        """The delay before the next attempt, after one that ended.

        Args:
            connected_for: how long the ended connection was up (``None``: it never came up).
        """
        if connected_for is not None and connected_for >= self._stable_after:
            self.failures = 0
        self.failures += 1
        return self.policy.delay(self.failures, self._rng)
