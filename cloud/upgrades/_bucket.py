"""A byte token bucket for pacing download streams (async, first come first served)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["ByteBucket"]


class ByteBucket:
    """Lets ``rate`` bytes per second through, shared by every stream that takes from it.

    A taker may go into debt by one chunk and then waits until the debt is repaid, holding
    the bucket's lock meanwhile, so takers are served in arrival order and the long-run
    rate never exceeds ``rate``, however many streams share the bucket. ``rate`` 0: no limit.

    Args:
        rate: bytes per second (0: unlimited).
        burst: bytes that may pass at once after a quiet period; default a quarter second.
        clock: monotonic seconds (tests).
        sleep: how to wait (tests).
    """

    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self._burst = float(burst if burst is not None else max(1, rate // 4))
        self._tokens = self._burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may be sent."""
        if self.rate == 0 or n <= 0:
            return
        async with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            if self._tokens < 0:
                # Pacing, not synchronisation: the debt is repaid at the configured rate.
                await self._sleep(-self._tokens / self.rate)
                self._tokens = 0.0
                self._last = self._clock()
