"""Presence shared by many gateway nodes through Redis.

Keys (all prefixed with the namespace, ``hplus:`` by default):

* ``tunnel:{hospital}:{session}`` — the record as JSON, expiring after ``ttl`` unless the
  owning node's heartbeat refreshes it; a dead node's tunnels vanish within one TTL.
* ``tunnels:{hospital}`` — set of the hospital's session ids (pruned when a record expired).
* ``lastseen:{hospital}`` — ISO time the hospital was last connected (never expires).
* ``epoch:{hospital}`` — counter for connection epochs.
* ``conflicts:{hospital}`` — hash: ``refused`` (count of refused duplicate edge ids) and
  ``last`` (the last one as JSON); expires a week after the last refusal.
* ``revoked:{credential}`` — hash: node id → tunnels it closed when the credential was
  revoked; expires after a day.
* channel ``revocations`` — credential ids, published when one is revoked.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cloud.presence._model import (
    EdgeConflicts,
    Presence,
    PresenceUnavailable,
    RefusedTunnel,
    TunnelRecord,
)

__all__ = ["RedisPresence"]

log = logging.getLogger(__name__)

_CONFLICTS_TTL_MS = 7 * 24 * 3600 * 1000
_CLOSURES_TTL_MS = 24 * 3600 * 1000


class RedisPresence(Presence):
    """Presence in Redis, shared by every gateway node.

    Args:
        client: a ``redis.asyncio`` client (its timeouts bound every operation).
        ttl: seconds a record lives without a heartbeat.
        namespace: key prefix, so several environments can share one Redis.
    """

    def __init__(
        self, client: aioredis.Redis, *, ttl: float = 30.0, namespace: str = "hplus:"
    ) -> None:
        self._r = client
        self._ttl_ms = int(ttl * 1000)
        self._ns = namespace

    @classmethod
    def from_url(
        cls, url: str, *, ttl: float = 30.0, timeout: float = 2.0, namespace: str = "hplus:"
    ) -> RedisPresence:
        """Connect lazily to the Redis at ``url``; every call fails fast after ``timeout``."""
        # A pooled connection broken by a Redis restart is retried once on a fresh one, so
        # the first call after an outage does not fail for a stale socket.
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client, ttl=ttl, namespace=namespace)

    async def put(self, record: TunnelRecord) -> None:
        """Publish or refresh one tunnel."""
        h = record.hospital_id
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                key = f"{self._ns}tunnel:{h}:{record.session_id}"
                pipe.set(key, record.to_json(), px=self._ttl_ms)
                pipe.sadd(f"{self._ns}tunnels:{h}", record.session_id)
                pipe.set(f"{self._ns}lastseen:{h}", record.last_seen.isoformat())
                await pipe.execute()
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def remove(self, hospital_id: str, session_id: str) -> None:
        """Withdraw one tunnel."""
        h = hospital_id
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.delete(f"{self._ns}tunnel:{h}:{session_id}")
                pipe.srem(f"{self._ns}tunnels:{h}", session_id)
                pipe.set(f"{self._ns}lastseen:{h}", dt.datetime.now(dt.UTC).isoformat())
                await pipe.execute()
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def lookup(self, hospital_id: str) -> list[TunnelRecord]:
        """The hospital's live tunnels on any node."""
        h = hospital_id
        try:
            sessions = sorted(_text(s) for s in await self._r.smembers(f"{self._ns}tunnels:{h}"))
            if not sessions:
                return []
            values = await self._r.mget([f"{self._ns}tunnel:{h}:{s}" for s in sessions])
            expired = [s for s, v in zip(sessions, values, strict=True) if v is None]
            if expired:
                await self._r.srem(f"{self._ns}tunnels:{h}", *expired)
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        return self._parse(v for v in values if v is not None)

    async def last_seen(self, hospital_id: str) -> dt.datetime | None:
        """When the hospital was last connected anywhere."""
        try:
            value = await self._r.get(f"{self._ns}lastseen:{hospital_id}")
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        return dt.datetime.fromisoformat(_text(value)) if value else None

    async def all(self) -> list[TunnelRecord]:
        """Every live tunnel on every node."""
        try:
            keys = [k async for k in self._r.scan_iter(match=f"{self._ns}tunnel:*", count=500)]
            values = await self._r.mget(keys) if keys else []
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        return self._parse(v for v in values if v is not None)

    async def next_epoch(self, hospital_id: str) -> int:
        """A higher epoch for the hospital (atomic across nodes)."""
        try:
            return int(await self._r.incr(f"{self._ns}epoch:{hospital_id}"))
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def record_refusal(self, refused: RefusedTunnel) -> None:
        """Count a refused duplicate and keep it as the last."""
        key = f"{self._ns}conflicts:{refused.hospital_id}"
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "refused", 1)
                pipe.hset(key, "last", refused.to_json())
                pipe.pexpire(key, _CONFLICTS_TTL_MS)
                await pipe.execute()
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def conflicts(self, hospital_id: str | None = None) -> list[EdgeConflicts]:
        """Refused duplicates per hospital."""
        prefix = f"{self._ns}conflicts:"
        try:
            if hospital_id is not None:
                keys = [f"{prefix}{hospital_id}"]
            else:
                keys = sorted(
                    {_text(k) async for k in self._r.scan_iter(match=f"{prefix}*", count=500)}
                )
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, ["refused", "last"])
                rows = await pipe.execute()
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        out = []
        for key, (refused, last) in zip(keys, rows, strict=True):
            if refused is None or last is None:
                continue
            try:
                out.append(
                    EdgeConflicts(
                        hospital_id=key[len(prefix) :],
                        refused=int(refused),
                        last=RefusedTunnel.from_json(last),
                    )
                )
            except ValueError as err:
                log.warning("skipping unreadable conflict record %s: %s", key, err)
        return out

    async def publish_revocation(self, credential_id: str) -> None:
        """Publish on the revocations channel."""
        try:
            await self._r.publish(f"{self._ns}revocations", credential_id)
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def revocations(self) -> AsyncIterator[str]:
        """Subscribe to the revocations channel."""
        pubsub = self._r.pubsub()
        try:
            await pubsub.subscribe(f"{self._ns}revocations")
            while True:
                # Bounded waits keep the connection's socket timeout from firing on a quiet
                # channel.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    yield _text(message["data"])
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        finally:
            await pubsub.aclose()

    async def add_revocation_closures(self, credential_id: str, node_id: str, count: int) -> None:
        """Add to the node's count for the credential."""
        key = f"{self._ns}revoked:{credential_id}"
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, node_id, count)
                pipe.pexpire(key, _CLOSURES_TTL_MS)
                await pipe.execute()
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None

    async def revocation_closures(self, credential_id: str) -> dict[str, int]:
        """Closed tunnels of the credential, per node."""
        try:
            values = await self._r.hgetall(f"{self._ns}revoked:{credential_id}")
        except RedisError as err:
            raise PresenceUnavailable(f"presence store unreachable: {err}") from None
        return {_text(k): int(v) for k, v in values.items()}

    async def close(self) -> None:
        """Close the connection pool."""
        await self._r.aclose()

    @staticmethod
    def _parse(values: Iterable[bytes | str]) -> list[TunnelRecord]:
        out = []
        for v in values:
            try:
                out.append(TunnelRecord.from_json(v))
            except ValueError as err:
                # A record another version wrote badly must not hide the good ones.
                log.warning("skipping unreadable presence record: %s", err)
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
