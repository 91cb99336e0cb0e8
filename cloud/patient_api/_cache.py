"""A small read cache in front of the read store for hot reads (ListSlots above all).

Thousands of patients open the same doctor's day within seconds when a popular clinic's
slots are released. The cache keeps each answer for a few seconds (``ttl``), holds at most
``max_entries`` answers (least recently used dropped first), and lets concurrent misses of
one key share a single store read (the first caller reads, the others wait for it). An
entry never outlives ``ttl``, which is far shorter than the sync's interval, so what a
sync writes shows within ``ttl`` seconds; `invalidate` drops a hospital's entries at once.

Entries are the response messages themselves: callers must not modify what they get.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_CACHE_ENTRIES", "DEFAULT_CACHE_SECONDS", "ReadCache"]

DEFAULT_CACHE_SECONDS = 2.0
"""How long an answer is served from the cache (the sync's slot interval is 30 s)."""
DEFAULT_CACHE_ENTRIES = 10_000
"""Answers kept at most."""
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""Bytes of answers kept at most (by ``weigh``): a caller choosing 500-slot pages cannot
make the node hold entries x the largest page."""

V = TypeVar("V")


class ReadCache(Generic[V]):
    """A TTL + LRU cache of read answers, keyed by ``(hospital_id, key)``.

    Args:
        ttl: seconds an answer is served; 0 disables the cache (every read goes through).
        max_entries: answers kept at most.
        max_bytes: the answers' total weight kept at most (an answer heavier than it is
            served but not kept).
        weigh: an answer's weight in bytes (default: every answer weighs 1 byte).
        clock: monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_CACHE_SECONDS,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        weigh: Callable[[V], int] = lambda _: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._clock = clock
        self._entries: OrderedDict[tuple[str, Hashable], tuple[float, V, int]] = OrderedDict()
        self.bytes = 0
        """The kept answers' total weight."""
        self._loading: dict[tuple[str, Hashable], asyncio.Future[V]] = {}
        """Loads in flight, one per key (bounded by the calls in flight)."""
        self.hits = 0
        """Answers served from the cache."""
        self.misses = 0
        """Answers read from the store."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, hospital_id: str, key: Hashable) -> V | None:
        """The fresh answer kept for the key, or ``None``."""
        full = (hospital_id, key)
        entry = self._entries.get(full)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop(full)
            return None
        self._entries.move_to_end(full)
        return entry[1]

    def put(self, hospital_id: str, key: Hashable, value: V) -> None:
        """Keep an answer for ``ttl`` seconds (dropping the least recently used if full)."""
        if self.ttl == 0:
            return
        weight = self._weigh(value)
        full = (hospital_id, key)
        self._drop(full)
        if weight > self.max_bytes:
            return
        self._entries[full] = (self._clock() + self.ttl, value, weight)
        self.bytes += weight
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def _drop(self, full: tuple[str, Hashable]) -> None:
        entry = self._entries.pop(full, None)
        if entry is not None:
            self.bytes -= entry[2]

    async def read(self, hospital_id: str, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        """The kept answer, else ``load()``'s (one load per key at a time).

        The load runs in a task of its own, so a caller that gives up (its call cancelled)
        does not fail the others waiting on the same key. A load that fails fails every
        caller waiting on it and keeps nothing.
        """
        if self.ttl == 0:
            self.misses += 1
            return await load()
        found = self.get(hospital_id, key)
        if found is not None:
            self.hits += 1
            return found
        full = (hospital_id, key)
        task = self._loading.get(full)
        if task is None:
            self.misses += 1

            async def run() -> V:
                return await load()

            task = asyncio.ensure_future(run())
            self._loading[full] = task
            task.add_done_callback(lambda t: self._loaded(full, t))
        else:
            self.hits += 1
        return await asyncio.shield(task)

    def _loaded(self, full: tuple[str, Hashable], task: asyncio.Future[V]) -> None:
        if self._loading.get(full) is task:
            del self._loading[full]
        if task.cancelled():
            return
        if task.exception() is None:  # retrieved either way: never "never retrieved"
            self.put(full[0], full[1], task.result())

    def invalidate(self, hospital_id: str | None = None) -> int:
        """Drop a hospital's answers (every answer with ``None``); returns how many."""
        if hospital_id is None:
            dropped = len(self._entries)
            self._entries.clear()
            self.bytes = 0
            return dropped
        stale = [k for k in self._entries if k[0] == hospital_id]
        for k in stale:
            self._drop(k)
        return len(stale)
