"""Exponential backoff with full jitter, reset after a stable period.

Full jitter (a delay drawn uniformly from ``[0, min(cap, base * 2**n))``) spreads 2,000
edges that lost the same node over the whole window instead of letting them return in
lock-step; resetting only after the tunnel stayed up for ``stable_after`` keeps a flapping
node from getting a fresh fast retry each time.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays before reconnect attempts.

    Args:
        initial: the first window, seconds.
        maximum: the largest window, seconds.
        multiplier: growth of the window per failure.
        stable_after: a connection that lasted this long resets the window.
        rng: the random source (tests pass a seeded one).
    """

    def __init__(
        self,
        *,
        initial: float = 1.0,
        maximum: float = 60.0,
        multiplier: float = 2.0,
        stable_after: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum or multiplier < 1 or stable_after < 0:
            raise ValueError("need 0 < initial <= maximum, multiplier >= 1, stable_after >= 0")
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._stable_after = stable_after
        self._rng = rng or random.Random()
        self.failures = 0
        """Consecutive failures since the last reset."""

    def window(self) -> float:
        """The current upper bound of the delay."""
        return min(self._maximum, self._initial * self._multiplier**self.failures)

    def next_delay(self, connected_for: float | None = None) -> float:
        """The delay before the next attempt, after one that ended.

        Args:
            connected_for: how long the ended connection was up (``None``: it never came up).
        """
        if connected_for is not None and connected_for >= self._stable_after:
            self.failures = 0
        delay = self._rng.uniform(0.0, self.window())
        self.failures += 1
        return delay
