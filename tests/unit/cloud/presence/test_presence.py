from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest

from cloud.presence import (
    InProcessPresence,
    Presence,
    PresenceUnavailable,
    RedisPresence,
    RefusedTunnel,
    TunnelRecord,
)
from tests.support.ports import refused_port
from tests.support.waiting import until

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def record(hospital: str = "h-1", session: str = "s-1", node: str = "n-1", **kw) -> TunnelRecord:
    values = {
        "hospital_id": hospital,
        "session_id": session,
        "node_id": node,
        "node_address": f"{node}:7001",
        "epoch": 1,
        "edge_id": "edge-a",
        "edge_version": "1.0.0",
        "contract_release": "1.0.0",
        "connected_since": NOW,
        "last_seen": NOW,
    }
    values.update(kw)
    return TunnelRecord(**values)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def presence(request: pytest.FixtureRequest):
    if request.param == "memory":
        yield InProcessPresence()
        return
    url = request.getfixturevalue("redis_url")
    ns = f"test:{uuid.uuid4().hex}:"
    store = RedisPresence.from_url(url, ttl=30, namespace=ns)
    yield store
    keys = [k async for k in store._r.scan_iter(match=f"{ns}*")]
    if keys:
        await store._r.delete(*keys)
    await store.close()


async def test_put_lookup_remove(presence: Presence) -> None:
    a = record(session="s-1", node="n-1")
    b = record(session="s-2", node="n-2", connection_index=1, rtt_ms=3.5, in_flight=2)
    await presence.put(a)
    await presence.put(b)
    await presence.put(record(hospital="h-2", session="s-3"))
    found = sorted(await presence.lookup("h-1"), key=lambda r: r.session_id)
    assert found == [a, b]
    await presence.remove("h-1", "s-1")
    assert await presence.lookup("h-1") == [b]
    assert {r.session_id for r in await presence.all()} == {"s-2", "s-3"}
    assert await presence.lookup("h-unknown") == []


async def test_last_seen_outlives_the_tunnel(presence: Presence) -> None:
    assert await presence.last_seen("h-1") is None
    await presence.put(record())
    assert await presence.last_seen("h-1") == NOW
    before = dt.datetime.now(dt.UTC)
    await presence.remove("h-1", "s-1")
    seen = await presence.last_seen("h-1")
    assert seen is not None
    assert seen >= before


async def test_epochs_increase(presence: Presence) -> None:
    epochs = [await presence.next_epoch("h-1") for _ in range(3)]
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == 3
    assert await presence.next_epoch("h-2") == 1


@pytest.mark.integration
async def test_redis_record_expires_without_heartbeat(redis_url: str) -> None:
    ns = f"test:{uuid.uuid4().hex}:"
    store = RedisPresence.from_url(redis_url, ttl=0.05, namespace=ns)
    try:
        await store.put(record())
        assert len(await store.lookup("h-1")) == 1
        # Let the record expire: poll Redis's own clock instead of sleeping a fixed time.
        key = f"{ns}tunnel:h-1:s-1"
        while await store._r.exists(key):
            await store._r.ping()
        assert await store.lookup("h-1") == []
        # The stale index entry was pruned by the lookup.
        assert await store._r.smembers(f"{ns}tunnels:h-1") == set()
        assert await store.last_seen("h-1") == NOW
    finally:
        keys = [k async for k in store._r.scan_iter(match=f"{ns}*")]
        if keys:
            await store._r.delete(*keys)
        await store.close()


async def test_unreachable_redis_fails_fast_with_presence_unavailable() -> None:
    with refused_port() as port:
        store = RedisPresence.from_url(f"redis://127.0.0.1:{port}", timeout=0.5)
        try:
            with pytest.raises(PresenceUnavailable, match="presence store unreachable"):
                await store.lookup("h-1")
            with pytest.raises(PresenceUnavailable):
                await store.put(record())
        finally:
            await store.close()


@pytest.mark.integration
async def test_unreadable_record_does_not_hide_good_ones(redis_url: str) -> None:
    ns = f"test:{uuid.uuid4().hex}:"
    store = RedisPresence.from_url(redis_url, namespace=ns)
    try:
        await store.put(record(session="good"))
        await store._r.set(f"{ns}tunnel:h-1:bad", b"{not json")
        await store._r.sadd(f"{ns}tunnels:h-1", "bad")
        assert [r.session_id for r in await store.lookup("h-1")] == ["good"]
    finally:
        keys = [k async for k in store._r.scan_iter(match=f"{ns}*")]
        await store._r.delete(*keys)
        await store.close()


def test_record_json_round_trip() -> None:
    r = record(rtt_ms=1.25, in_flight=7, revision=2, warnings=("release 1.0.0 is deprecated",))
    assert TunnelRecord.from_json(r.to_json()) == r
    with pytest.raises(ValueError, match="not a tunnel record"):
        TunnelRecord.from_json("{}")


def test_record_from_a_newer_node_keeps_its_known_fields() -> None:
    r = record(credential_id="c-1", peer="ipv4:10.0.0.1:5000")
    data = json.loads(r.to_json())
    data["added_in_a_later_release"] = {"x": 1}
    assert TunnelRecord.from_json(json.dumps(data)) == r


def refusal(hospital: str, edge: str, at_minute: int) -> RefusedTunnel:
    return RefusedTunnel(
        hospital_id=hospital,
        edge_id=edge,
        connection_index=0,
        credential_id="c-9",
        peer=f"ipv4:198.51.100.{at_minute}:4000",
        node_id="n-2",
        at=NOW + dt.timedelta(minutes=at_minute),
        holder_session_id="s-1",
        holder_node_id="n-1",
        holder_peer="ipv4:203.0.113.7:5000",
        holder_since=NOW,
    )


async def test_refused_duplicates_are_counted_per_hospital_with_the_last(
    presence: Presence,
) -> None:
    assert await presence.conflicts() == []
    await presence.record_refusal(refusal("h-2", "edge-a", 1))
    await presence.record_refusal(refusal("h-1", "edge-a", 2))
    await presence.record_refusal(refusal("h-1", "edge-b", 3))
    summary = await presence.conflicts()
    assert [(c.hospital_id, c.refused) for c in summary] == [("h-1", 2), ("h-2", 1)]
    assert summary[0].last == refusal("h-1", "edge-b", 3)
    (only,) = await presence.conflicts("h-2")
    assert only.last == refusal("h-2", "edge-a", 1)
    assert await presence.conflicts("h-3") == []


async def test_revocations_reach_every_subscriber_and_closures_add_up(
    presence: Presence,
) -> None:
    got: list[list[str]] = [[], []]

    async def listen(into: list[str]) -> None:
        async for credential_id in presence.revocations():
            into.append(credential_id)

    listeners = [asyncio.get_running_loop().create_task(listen(g)) for g in got]
    try:

        async def delivered() -> bool:
            # Published until both subscriptions are live and have seen it.
            await presence.publish_revocation("c-1")
            return all(got)

        await until(delivered)
        assert all(set(g) == {"c-1"} for g in got)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    assert await presence.revocation_closures("c-1") == {}
    await presence.add_revocation_closures("c-1", "n-1", 2)
    await presence.add_revocation_closures("c-1", "n-2", 1)
    await presence.add_revocation_closures("c-1", "n-1", 1)
    assert await presence.revocation_closures("c-1") == {"n-1": 3, "n-2": 1}
