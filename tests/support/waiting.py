"""Waiting for conditions that components change but expose no event for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], bool | Awaitable[bool]], limit: float = 10.0) -> None:
    """Wait until ``condition()`` holds, failing with TimeoutError after ``limit`` seconds.

    Used only where the component exposes no event to wait on (counters, Redis contents).
    """

    async def holds() -> bool:
        result = condition()
        if isinstance(result, Awaitable):
            return bool(await result)
        return bool(result)

    async with asyncio.timeout(limit):
        while not await holds():  # noqa: ASYNC110 - no event exists for these conditions
            await asyncio.sleep(0.01)
