from __future__ import annotations

import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.census import CensusStore, FieldCensus, migrate_census
from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel import CallInfo

RPC = "/hplus.tunnel.v1.TunnelService/Connect"


def feed(census: FieldCensus, release: str, *messages: tunnel_pb2.ConnectRequest) -> None:
    for m in messages:
        info = CallInfo(
            method=RPC,
            metadata=[],
            trace=None,
            hospital_id="h",
            session="s",
            started=0.0,
            contract_release=release,
        )
        census.on_start(info)
        census.on_message(info, True, m.SerializeToString())


@pytest.fixture
async def store(db_engine: AsyncEngine) -> CensusStore:
    await migrate_census(db_engine)
    return CensusStore(db_engine)


async def test_counts_from_several_nodes_add_up(store: CensusStore, db_engine: AsyncEngine):
    node_a = FieldCensus(rate=1.0, rng=random.Random(1))
    node_b = FieldCensus(rate=1.0, rng=random.Random(2))
    second = CensusStore(db_engine)  # another node's writer on the same database
    with_frames = tunnel_pb2.ConnectRequest(frames=[tunnel_pb2.Frame(stream_id=3)])
    feed(node_a, "1.0.0", with_frames, tunnel_pb2.ConnectRequest())
    feed(node_b, "1.0.0", with_frames)
    await store.flush(node_a)
    await second.flush(node_b)
    # Flushing again adds only what is new.
    feed(node_a, "1.0.0", with_frames)
    await store.flush(node_a)
    await store.flush(node_a)
    rows, since = await store.rows(rpc=RPC)
    got = {(r.field_path, r.messages, r.sampled) for r in rows}
    assert got == {("frames", 3, 4), ("frames.stream_id", 3, 4)}
    assert since is not None


async def test_filters(store: CensusStore) -> None:
    census = FieldCensus(rate=1.0)
    feed(census, "1.0.0", tunnel_pb2.ConnectRequest(frames=[tunnel_pb2.Frame(stream_id=1)]))
    feed(census, "1.1.0", tunnel_pb2.ConnectRequest(frames=[tunnel_pb2.Frame()]))
    await store.flush(census)
    rows, _ = await store.rows(contract_release="1.1.0")
    assert [(r.contract_release, r.field_path) for r in rows] == [("1.1.0", "frames")]
    rows, _ = await store.rows(field_path="frames")
    assert {r.field_path for r in rows} == {"frames", "frames.stream_id"}
    rows, _ = await store.rows(field_path="frames.stream_id")
    assert {r.field_path for r in rows} == {"frames.stream_id"}
    assert (await store.rows(rpc="/x/Y"))[0] == []
