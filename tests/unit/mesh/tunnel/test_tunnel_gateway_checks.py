"""The gateway's extra hello check (used for the edge's contract release) and epochs."""

from __future__ import annotations

import grpc
import pytest

from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.tunnel import EdgeIdentity, EdgeTunnel, TunnelGateway, TunnelRefused, TunnelServer
from mesh.tunnel._errors import make_status
from tests.unit.mesh.tunnel.tunnel_harness import CREDENTIAL, HOSPITAL, authenticate


async def connect(gateway: TunnelGateway, release: str) -> tuple[EdgeTunnel, grpc.aio.Server]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    edge = EdgeTunnel(
        channel,
        TunnelServer(),
        credential=CREDENTIAL,
        identity=EdgeIdentity(hospital_id=HOSPITAL, edge_id="e", contract_release=release),
    )
    return edge, server


async def test_check_hello_refuses_with_its_status_and_accepts_otherwise() -> None:
    seen: list[str] = []

    async def check(hello: tunnel_pb2.Hello, welcome: tunnel_pb2.Welcome):
        seen.append(hello.contract_release)
        if hello.contract_release == "0.9.0":
            return make_status(grpc.StatusCode.FAILED_PRECONDITION, "release 0.9.0 is retired")
        welcome.warnings.append(f"release {hello.contract_release} is old")
        return None

    gateway = TunnelGateway(authenticate=authenticate, check_hello=check)
    edge, server = await connect(gateway, "0.9.0")
    try:
        with pytest.raises(TunnelRefused) as info:
            await edge.run()
        assert info.value.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert info.value.status.message == "release 0.9.0 is retired"
        assert gateway.sessions(HOSPITAL) == []

        ok, server2 = await connect(gateway, "1.0.0")
        async with ok:
            await ok.wait_ready()
            assert [s.hello.contract_release for s in gateway.sessions(HOSPITAL)] == ["1.0.0"]
            assert list(ok.session.welcome.warnings) == ["release 1.0.0 is old"]
        await server2.stop(None)
    finally:
        await gateway.shutdown(0)
        await server.stop(None)
    assert seen == ["0.9.0", "1.0.0"]


async def test_epochs_come_from_the_shared_source_but_never_go_backwards() -> None:
    answers = iter([7, 3])

    async def next_epoch(hospital: str) -> int:
        return next(answers)

    gateway = TunnelGateway(authenticate=authenticate, next_epoch=next_epoch)
    epochs = []
    try:
        for _ in range(2):
            edge, server = await connect(gateway, "1.0.0")
            async with edge:
                await edge.wait_ready()
                epochs.append(edge.session.welcome.epoch)
                await edge.shutdown(0)
            await server.stop(None)
    finally:
        await gateway.shutdown(0)
    assert epochs == [7, 8]
