"""Real-time HIS calls paced by the profile's ``his.limits`` (rate, burst, concurrency).

The pending-task queue paces its own drain (``tasks``); this guards the calls made while
the cloud waits, so a flood of patients' reads cannot press the HIS harder than the
hospital allowed. A call waits for a token and a concurrency slot before it starts; the
wait counts against the caller's deadline like any other.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Self, cast

from frontend_server.adapters import Capabilities, HisAdapter
from frontend_server.profile import HisLimits
from frontend_server.tasks import TokenBucket

__all__ = ["PacedAdapter", "paced"]


class PacedAdapter:
    """Wraps an adapter so each HIS call starts within the rate and concurrency limits.

    Args:
        adapter: the adapter to pace (it keeps its own lifecycle).
        limits: the profile's ``his.limits``.
    """

    def __init__(self, adapter: HisAdapter, limits: HisLimits) -> None:
        self._adapter = adapter
        self._bucket = TokenBucket(limits.rate_per_second, limits.burst)
        self._slots = asyncio.Semaphore(limits.max_concurrency)

    @property
    def dialect(self) -> str:
        """The wrapped adapter's dialect."""
        return self._adapter.dialect

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped adapter's capabilities."""
        return self._adapter.capabilities

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the wrapped adapter."""
        await self._adapter.aclose()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._adapter, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        call = cast(Callable[..., Awaitable[Any]], attribute)

        @functools.wraps(call)
        async def paced_call(*args: Any, **kwargs: Any) -> Any:
            async with self._slots:
                await self._bucket.acquire()
                return await call(*args, **kwargs)

        return paced_call


def paced(adapter: HisAdapter, limits: HisLimits) -> HisAdapter:
    """``adapter`` paced by ``limits`` (see :class:`PacedAdapter`).

    Args:
        adapter: the adapter.
        limits: the profile's ``his.limits``.

    Returns:
        An adapter with the same interface.
    """
    return cast(HisAdapter, PacedAdapter(adapter, limits))
