from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, timestamp_pb2
from google.rpc import status_pb2

from cloud.census import CensusRow, FieldCensus
from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.tunnel import EdgeIdentity, EdgeTunnel, TunnelChannel, TunnelGateway, TunnelServer
from tests.unit.mesh.tunnel.tunnel_harness import CREDENTIAL, HOSPITAL, authenticate

METHOD = "/census.test.Svc/Do"


def pool_with_test_service() -> descriptor_pool.DescriptorPool:
    """A pool where census.test.Svc/Do takes and returns hplus.tunnel.v1.Hello."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (timestamp_pb2,):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)

    for mod in (duration_pb2, any_pb2, status_pb2, tunnel_pb2):
        pool.AddSerializedFile(mod.DESCRIPTOR.serialized_pb)
    test = descriptor_pb2.FileDescriptorProto(
        name="census_test.proto", package="census.test", dependency=["hplus/tunnel/v1/tunnel.proto"]
    )
    svc = test.service.add(name="Svc")
    svc.method.add(
        name="Do", input_type=".hplus.tunnel.v1.Hello", output_type=".hplus.tunnel.v1.Welcome"
    )
    pool.Add(test)
    return pool


@pytest.fixture
async def census_channel():
    """A gateway and an edge over real sockets; the edge echoes Do with a fixed Welcome."""
    census = FieldCensus(rate=1.0, rng=random.Random(0), pool=pool_with_test_service())
    gateway = TunnelGateway(authenticate=authenticate)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    edge_server = TunnelServer()

    async def do(request: bytes, context) -> bytes:
        hello = tunnel_pb2.Hello.FromString(request)
        welcome = tunnel_pb2.Welcome(revision=2, session_id="s")
        if hello.services:
            welcome.capabilities.append("x")
        return welcome.SerializeToString()

    edge_server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "census.test.Svc", {"Do": grpc.unary_unary_rpc_method_handler(do)}
            )
        ]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    edge = EdgeTunnel(
        channel,
        edge_server,
        credential=CREDENTIAL,
        identity=EdgeIdentity(hospital_id=HOSPITAL, edge_id="e", contract_release="1.0.0"),
    )
    async with edge:
        await edge.wait_ready()
        yield census, TunnelChannel(lambda: gateway.pick(HOSPITAL), hooks=[census])
        await edge.shutdown(0)
    await gateway.shutdown(0)
    await channel.close()
    await server.stop(None)


async def test_census_counts_fields_present_per_rpc_direction_and_release(census_channel):
    census, channel = census_channel
    do = channel.unary_unary(METHOD)
    await do(tunnel_pb2.Hello(hospital_id="h", revisions=[2]).SerializeToString(), timeout=5)
    await do(tunnel_pb2.Hello(hospital_id="h", services=["a", "b"]).SerializeToString(), timeout=5)
    assert list(census.rows()) == []  # nothing is decoded on the call path
    assert census.drain() == 4
    rows = {(r.direction, r.field_path): (r.messages, r.sampled) for r in census.rows()}
    assert rows == {
        ("request", "hospital_id"): (2, 2),
        ("request", "revisions"): (1, 2),
        ("request", "services"): (1, 2),
        ("response", "revision"): (2, 2),
        ("response", "session_id"): (2, 2),
        ("response", "capabilities"): (1, 2),
    }
    assert {r.contract_release for r in census.rows()} == {"1.0.0"}
    assert {r.rpc for r in census.rows(rpc=METHOD)} == {METHOD}


async def test_unknown_fields_from_a_newer_edge_are_counted_by_number(census_channel):
    census, channel = census_channel
    newer = tunnel_pb2.Hello(hospital_id="h").SerializeToString() + bytes([0xA8, 0x06, 0x01])
    await channel.unary_unary(METHOD)(newer, timeout=5)  # field 101, varint 1
    census.drain()
    paths = {r.field_path for r in census.rows() if r.direction == "request"}
    assert paths == {"hospital_id", "#101"}


async def test_sampling_rate_is_honoured() -> None:
    census = FieldCensus(rate=0.1, rng=random.Random(42))
    from mesh.tunnel import CallInfo

    sampled = 0
    for _ in range(10_000):
        info = CallInfo(
            method=METHOD, metadata=[], trace=None, hospital_id="h", session="s", started=0.0
        )
        census.on_start(info)
        sampled += bool(info.extra.get("census"))
    assert 850 < sampled < 1150


def test_nested_and_repeated_paths_are_dotted() -> None:
    from cloud.census._census import _paths

    out: set[str] = set()
    resp = tunnel_pb2.ConnectResponse(
        frames=[
            tunnel_pb2.Frame(stream_id=1, open=tunnel_pb2.OpenStream(method="/a/b")),
            tunnel_pb2.Frame(close=tunnel_pb2.CloseStream(status={"code": 5})),
        ]
    )
    _paths(resp, "", out)
    assert out == {
        "frames",
        "frames.stream_id",
        "frames.open",
        "frames.open.method",
        "frames.close",
        "frames.close.status",
        "frames.close.status.code",
    }


def test_bad_rate() -> None:
    with pytest.raises(ValueError, match="census rate"):
        FieldCensus(rate=1.5)


def test_row_is_sortable() -> None:
    a = CensusRow("/x/Y", "request", "1.0.0", "a", 1, 1)
    b = CensusRow("/x/Y", "request", "1.0.0", "b", 1, 1)
    assert sorted([b, a]) == [a, b]
