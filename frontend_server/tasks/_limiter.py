"""A token bucket: at most ``burst + rate * t`` acquisitions in any interval of length t."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Paces starts of HIS calls.

    Waiters are served in arrival order (the lock is held while waiting for a token).

    Args:
        rate: tokens added per second.
        burst: bucket size; also the tokens available at start.
        clock: monotonic seconds.
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self._rate

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return now

    async def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
