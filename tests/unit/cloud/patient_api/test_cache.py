"""The hot-read cache: a TTL, a bound on entries, one load per key, invalidation."""

from __future__ import annotations

import asyncio

import pytest

from cloud.patient_api import ReadCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_answer_is_served_until_its_ttl_then_read_again() -> None:
    clock = Clock()
    cache: ReadCache[str] = ReadCache(ttl=2.0, max_entries=10, clock=clock)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        return f"answer-{loads}"

    assert await cache.read("h1", "k", load) == "answer-1"
    clock.now += 1.9
    assert await cache.read("h1", "k", load) == "answer-1"
    clock.now += 0.2
    assert await cache.read("h1", "k", load) == "answer-2"
    assert (cache.hits, cache.misses) == (1, 2)


async def test_the_cache_holds_at_most_its_bound_least_recently_used_out() -> None:
    cache: ReadCache[int] = ReadCache(ttl=60.0, max_entries=3, clock=Clock())

    async def value(v: int) -> int:
        return v

    for i in range(3):
        await cache.read("h", i, lambda i=i: value(i))  # type: ignore[misc]
    assert cache.get("h", 0) == 0  # 0 is now the most recently used
    for i in range(3, 100):
        await cache.read("h", i, lambda i=i: value(i))  # type: ignore[misc]
        assert len(cache) <= 3
    assert len(cache) == 3
    assert cache.get("h", 0) is None
    assert [cache.get("h", i) for i in (97, 98, 99)] == [97, 98, 99]


async def test_the_cache_holds_at_most_its_bytes() -> None:
    cache: ReadCache[bytes] = ReadCache(ttl=60.0, max_entries=100, max_bytes=1000, weigh=len)
    for i in range(50):
        cache.put("h", i, b"x" * 300)
        assert cache.bytes <= 1000
    assert len(cache) == 3
    assert cache.bytes == 900
    cache.put("h", "huge", b"x" * 1001)  # served by its reader, never kept
    assert cache.get("h", "huge") is None
    assert cache.bytes == 900
    cache.put("h", 49, b"y" * 10)  # replacing an entry replaces its weight
    assert cache.bytes == 610
    assert cache.invalidate("h") == 3
    assert cache.bytes == 0


async def test_concurrent_misses_of_one_key_share_one_load() -> None:
    cache: ReadCache[str] = ReadCache(ttl=5.0, max_entries=10)
    started, release = asyncio.Event(), asyncio.Event()
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        started.set()
        await release.wait()
        return "slots"

    readers = [asyncio.create_task(cache.read("h1", "day", load)) for _ in range(20)]
    await started.wait()  # the load task runs after every reader has asked
    release.set()
    assert await asyncio.gather(*readers) == ["slots"] * 20
    assert loads == 1


async def test_a_reader_that_gives_up_does_not_fail_the_others() -> None:
    cache: ReadCache[str] = ReadCache(ttl=5.0, max_entries=10)
    started, release = asyncio.Event(), asyncio.Event()

    async def load() -> str:
        started.set()
        await release.wait()
        return "slots"

    first = asyncio.create_task(cache.read("h1", "day", load))
    second = asyncio.create_task(cache.read("h1", "day", load))
    await started.wait()
    first.cancel()
    release.set()
    assert await second == "slots"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_load_fails_its_readers_and_keeps_nothing() -> None:
    cache: ReadCache[str] = ReadCache(ttl=5.0, max_entries=10)

    async def broken() -> str:
        raise LookupError("store down")

    with pytest.raises(LookupError):
        await cache.read("h1", "day", broken)
    assert len(cache) == 0

    async def fine() -> str:
        return "slots"

    assert await cache.read("h1", "day", fine) == "slots"


async def test_invalidation_drops_one_hospital_or_all() -> None:
    cache: ReadCache[str] = ReadCache(ttl=60.0, max_entries=10, clock=Clock())
    for h in ("h1", "h2"):
        for k in ("a", "b"):
            cache.put(h, k, f"{h}{k}")
    assert cache.invalidate("h1") == 2
    assert cache.get("h1", "a") is None
    assert cache.get("h2", "a") == "h2a"
    assert cache.invalidate() == 2
    assert len(cache) == 0


async def test_a_zero_ttl_keeps_nothing() -> None:
    cache: ReadCache[int] = ReadCache(ttl=0, max_entries=10)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert [await cache.read("h", "k", load) for _ in range(3)] == [1, 2, 3]
    assert len(cache) == 0


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="ttl"):
        ReadCache(ttl=-1)
    with pytest.raises(ValueError, match="max_entries"):
        ReadCache(max_entries=0)
    with pytest.raises(ValueError, match="max_bytes"):
        ReadCache(max_bytes=0)
