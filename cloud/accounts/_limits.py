"""Token buckets: how often a phone, a client address or an app may do something.

A `Rate` is a burst and the time to earn it back (``5/10m``: five at once, one more every
two minutes). `Buckets.take` spends one token of a key's bucket, or says how long until
one is there. Two implementations: `InProcessBuckets` for one node (a least-recently-used
table of at most ``max_keys`` buckets, so a flood of new keys costs bounded memory: an
evicted bucket comes back full, which only ever lets through what a fresh key would get),
and `RedisBuckets`, shared by every node (one Lua script per take, keys expiring once
full again, so Redis holds only buckets in use). While Redis cannot be reached,
`RedisBuckets` counts in this node's own `InProcessBuckets` instead (the limits hold per
node, not cloud-wide), so an outage of Redis does not become an outage of sign-in and the
patient API (found by the chaos run: every call failed INTERNAL while Redis was cut).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from cloud.config import parse_rate

__all__ = ["Buckets", "InProcessBuckets", "Rate", "RedisBuckets", "bucket_key"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Rate:
    """A token bucket's shape: ``burst`` tokens, all earned back in ``per`` seconds."""

    burst: int
    """Tokens when full: how many may happen at once."""
    per: float
    """Seconds to refill a whole burst."""

    def __post_init__(self) -> None:
        if self.burst < 1 or not self.per > 0:
            raise ValueError(f"rate {self}: needs burst >= 1 and per > 0")

    @property
    def refill(self) -> float:
        """Tokens earned per second."""
        return self.burst / self.per

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"5/10m"`` → five, earned back in ten minutes (`cloud.config.parse_rate`).

        Raises:
            ValueError: not ``N/DURATION``.
        """
        return cls(*parse_rate(text))

    def __str__(self) -> str:
        return f"{self.burst}/{self.per:g}s"


def bucket_key(kind: str, value: str) -> str:
    """The key of a bucket: its kind and a digest of what it counts.

    A digest, so a phone number is never in plain text in Redis or in a memory dump.
    """
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:24]}"


class Buckets(Protocol):
    """Where buckets live."""

    async def take(self, key: str, rate: Rate) -> float | None:
        """Spend one token of ``key``'s bucket.

        Returns:
            ``None`` when a token was spent; else the seconds until one is there (nothing
            spent).
        """
        ...

    async def close(self) -> None:
        """Release what the buckets hold (connections)."""
        ...


class InProcessBuckets:
    """Buckets in this process (one node), at most ``max_keys`` of them.

    Args:
        max_keys: buckets kept; the least recently used is dropped beyond this.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, *, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_keys
        self._clock = clock

    async def take(self, key: str, rate: Rate) -> float | None:
        """See `Buckets.take`."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - at) * rate.refill)
        wait: float | None = None
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate.refill
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)

    async def close(self) -> None:
        """Nothing to release."""


# KEYS[1] bucket; ARGV burst, refill/s. Redis's own clock, so every node agrees.
_TAKE = """
local burst = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * refill)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / refill
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / refill * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    """Buckets in Redis, shared by every node.

    Args:
        client: a ``redis.asyncio.Redis`` (closed by `close`).
        namespace: prefix of every key.
    """

    def __init__(self, client: Any, *, namespace: str = "hplus:") -> None:
        self._client = client
        self._prefix = f"{namespace}bucket:"
        self._take = client.register_script(_TAKE)
        self._local = InProcessBuckets()
        self._degraded = False

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "hplus:", timeout: float = 2.0) -> RedisBuckets:
        """Buckets on the Redis at ``url``; a call fails over to this node after ``timeout``."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # As presence's client: a pooled connection broken by a Redis restart is retried
        # once on a fresh one; an unreachable Redis fails fast.
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client, namespace=namespace)

    async def take(self, key: str, rate: Rate) -> float | None:
        """See `Buckets.take`; in this node's own buckets while Redis cannot be reached."""
        from redis.exceptions import RedisError

        try:
            wait = float(
                await self._take(keys=[self._prefix + key], args=[rate.burst, rate.refill])
            )
        except RedisError as err:
            if not self._degraded:
                self._degraded = True
                _log.warning("rate limits: Redis unreachable (%s); counting on this node", err)
            return await self._local.take(key, rate)
        if self._degraded:
            self._degraded = False
            _log.warning("rate limits: Redis reachable again; counting cloud-wide")
        return None if wait <= 0 else max(wait, 0.001)

    async def close(self) -> None:
        """Close the Redis client."""
        await self._client.aclose()
