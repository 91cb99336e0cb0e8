"""The dialer does not hammer the cloud with a credential the cloud refused or revoked."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator

import grpc
from google.rpc import status_pb2

from frontend_server.dialer import Dialer, DialerConfig
from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.tunnel import TunnelGateway, TunnelServer, bearer_token
from tests.support.waiting import until


@dataclasses.dataclass(frozen=True)
class Cred:
    hospital_id: str
    credential_id: str


def authenticate(metadata: list[tuple[str, str | bytes]]) -> Cred | None:
    return Cred("h-1", "cred-1") if bearer_token(metadata) == "good" else None


@contextlib.asynccontextmanager
async def gateway_port(gateway: TunnelGateway) -> AsyncIterator[int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await gateway.shutdown(0)
        await server.stop(None)


def dialer(port: int, token: str) -> Dialer:
    config = DialerConfig(
        gateways=(f"127.0.0.1:{port}",),
        hospital_id="h-1",
        edge_id="e",
        credential=token,
        tls=False,
        backoff_initial=0.01,
        backoff_max=0.02,
        credential_backoff=1000.0,
    )
    return Dialer(config, TunnelServer(), rng=random.Random(7))


async def test_a_refused_credential_waits_the_long_credential_backoff() -> None:
    gateway = TunnelGateway(authenticate=authenticate)
    async with gateway_port(gateway) as port, dialer(port, "bad") as d:
        await until(lambda: d.slots[0].failures == 1)
        assert d.slots[0].last_error == "UNAUTHENTICATED: missing or bad credential"
        assert 500.0 <= d.slots[0].retry_in <= 1000.0


async def test_a_revoked_credential_ends_the_tunnel_and_waits_long() -> None:
    gateway = TunnelGateway(authenticate=authenticate)
    async with gateway_port(gateway) as port, dialer(port, "good") as d:
        await until(lambda: d.slots[0].connects == 1)
        assert gateway.close_credential("cred-1") == 1
        await until(lambda: d.slots[0].failures == 1)
        assert d.slots[0].last_error == "UNAUTHENTICATED: credential revoked"
        assert 500.0 <= d.slots[0].retry_in <= 1000.0


async def test_other_refusals_keep_the_ordinary_backoff() -> None:
    async def retired(
        hello: tunnel_pb2.Hello, welcome: tunnel_pb2.Welcome
    ) -> status_pb2.Status | None:
        code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
        return status_pb2.Status(code=code, message="release retired")

    gateway = TunnelGateway(authenticate=authenticate, check_hello=retired)
    async with gateway_port(gateway) as port, dialer(port, "good") as d:
        await until(lambda: d.slots[0].failures >= 2)
        assert d.slots[0].last_error == "FAILED_PRECONDITION: release retired"
        assert d.slots[0].retry_in <= 0.02
