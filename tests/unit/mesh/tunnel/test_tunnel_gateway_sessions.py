"""The gateway's session table: credentials, their limit and revocation, edge-id conflicts.

Real ``grpc.aio`` servers on loopback and real `EdgeTunnel`s; the only fake is the
authenticator (a dict of tokens), which is a seam the gateway owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from hplus.tunnel.v1 import tunnel_pb2_grpc
from mesh.tunnel import (
    EdgeConflict,
    EdgeIdentity,
    EdgeTunnel,
    TunnelConfig,
    TunnelGateway,
    TunnelRefused,
    TunnelServer,
    bearer_token,
)
from tests.support.waiting import until
from tests.unit.mesh.tunnel.tunnel_harness import HOSPITAL, EchoServicer, EchoStub, S
from tools.proxy import Proxy

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@dataclasses.dataclass(frozen=True)
class Cred:
    hospital_id: str
    credential_id: str


TOKENS = {
    "token-a": Cred(HOSPITAL, "cred-a"),
    "token-b": Cred(HOSPITAL, "cred-b"),
}


def authenticate(metadata: list[tuple[str, str | bytes]]) -> Cred | None:
    return TOKENS.get(bearer_token(metadata) or "")


@contextlib.asynccontextmanager
async def serving(gateway: TunnelGateway) -> AsyncIterator[int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await gateway.shutdown(0)
        await server.stop(None)


@contextlib.asynccontextmanager
async def edge(
    port: int,
    token: str,
    *,
    edge_id: str = "edge-a",
    index: int = 0,
    config: TunnelConfig | None = None,
) -> AsyncIterator[EdgeTunnel]:
    """An edge tunnel (not yet running) that serves the echo service."""
    server = TunnelServer()
    server.add_generic_rpc_handlers((EchoServicer().handler(),))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield EdgeTunnel(
            channel,
            server,
            credential=token,
            identity=EdgeIdentity(hospital_id=HOSPITAL, edge_id=edge_id, connection_index=index),
            config=config,
        )


async def started(tunnel: EdgeTunnel) -> asyncio.Task[object]:
    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(tunnel.run())
    ready = asyncio.get_running_loop().create_task(tunnel.wait_ready())
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        await task  # raises TunnelRefused with the reason
    return task


async def refused(tunnel: EdgeTunnel) -> TunnelRefused:
    with pytest.raises(TunnelRefused) as info:
        await asyncio.wait_for(tunnel.run(), 10)
    return info.value


async def echo(gateway: TunnelGateway) -> str:
    reply = await EchoStub(gateway.channel(HOSPITAL)).Unary(S(value="x"), timeout=5)
    return str(reply.value)


# -- edge-id conflicts ----------------------------------------------------------------------


async def test_a_second_live_edge_with_the_same_id_is_refused_and_the_first_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conflicts: list[EdgeConflict] = []
    gateway = TunnelGateway(authenticate=authenticate, node_id="n1", on_conflict=conflicts.append)
    async with serving(gateway) as port, edge(port, "token-a") as real:
        task = await started(real)
        (holder,) = gateway.sessions(HOSPITAL)
        # An intruder with a stolen credential and the real edge's id.
        async with edge(port, "token-b") as intruder:
            err = await refused(intruder)
        assert err.status.code == ALREADY_EXISTS
        assert err.status.message.startswith(
            "edge id 'edge-a' connection 0 is held by a live session since "
        )
        assert gateway.sessions(HOSPITAL) == [holder]
        assert not task.done()
        assert await echo(gateway) == "echo:x"
        (conflict,) = conflicts
        assert (conflict.claim.edge_id, conflict.claim.credential_id) == ("edge-a", "cred-b")
        assert conflict.claim.peer.startswith("ipv4:127.0.0.1:")
        assert conflict.holder.session_id == holder.welcome.session_id
        assert conflict.node_id == "n1"
        lines = [r.getMessage() for r in caplog.records if "refused tunnel" in r.getMessage()]
        assert len(lines) == 1
        assert holder.welcome.session_id in lines[0]  # both sides are in the log line
        assert "credential cred-b" in lines[0]
        # Another connection index of the same edge is not a conflict.
        async with edge(port, "token-a", index=1) as second:
            await started(second)
            assert len(gateway.sessions(HOSPITAL)) == 2
            await second.shutdown(0)
        await real.shutdown(0)


async def test_a_half_open_holder_is_replaced_within_the_liveness_probe() -> None:
    # The cloud's own silence bound (3 x 30 s) would take 90 s; the probe takes 0.3 s.
    slow_pings = TunnelConfig(ping_interval=30.0)
    gateway = TunnelGateway(authenticate=authenticate, config=slow_pings, liveness_probe=0.3)
    async with serving(gateway) as port:
        proxy = Proxy("127.0.0.1", port)
        await proxy.start()
        try:
            async with edge(proxy.port, "token-a") as before:
                old_task = await started(before)
                (old,) = gateway.sessions(HOSPITAL)
                proxy.blackhole()  # e.g. the hospital's NAT forgot the connection
                async with edge(port, "token-a") as after:
                    loop = asyncio.get_running_loop()
                    begin = loop.time()
                    await started(after)
                    took = loop.time() - begin
                    assert took < 5.0
                    new_id = after.session.welcome.session_id
                    await until(
                        lambda: (
                            [s.welcome.session_id for s in gateway.sessions(HOSPITAL)] == [new_id]
                        )
                    )
                    assert old.status is not None
                    assert old.status.code == UNAVAILABLE
                    assert old.status.message == "replaced by a newer session"
                    assert await echo(gateway) == "echo:x"
                    await after.shutdown(0)
                old_task.cancel()
                await asyncio.gather(old_task, return_exceptions=True)
        finally:
            await proxy.close()


# -- credentials -----------------------------------------------------------------------------


async def test_one_credential_holds_at_most_the_limit_exactly_even_in_a_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    epochs = iter(range(1, 1000))

    async def slow_authenticate(metadata: list[tuple[str, str | bytes]]) -> Cred | None:
        await asyncio.sleep(0)  # like a database lookup: other connects run meanwhile
        return authenticate(metadata)

    async def next_epoch(hospital: str) -> int:
        await asyncio.sleep(0)
        return next(epochs)

    gateway = TunnelGateway(
        authenticate=slow_authenticate, next_epoch=next_epoch, max_tunnels_per_credential=3
    )
    async with serving(gateway) as port, contextlib.AsyncExitStack() as stack:
        tunnels = [
            await stack.enter_async_context(edge(port, "token-a", edge_id=f"e{i}"))
            for i in range(21)
        ]
        loop = asyncio.get_running_loop()
        burst = [loop.create_task(t.run()) for t in tunnels[:20]]
        await until(lambda: sum(task.done() for task in burst) == 17, 10)
        accepted = [t for t in tunnels[:20] if t.session.ready.is_set()]
        assert len(accepted) == 3
        assert len(gateway.sessions(HOSPITAL)) == 3
        for task in burst:
            if task.done():
                with pytest.raises(TunnelRefused) as info:
                    task.result()
                assert info.value.status.code == RESOURCE_EXHAUSTED
                assert info.value.status.message == (
                    "credential cred-a already holds 3 live tunnel(s) on this node: the limit "
                    "is 3 per credential (max_tunnels_per_credential)"
                )
        logged = [r for r in caplog.records if "refusing tunnels of hospital" in r.getMessage()]
        assert len(logged) == 1  # once, not once per attempt
        # Another credential of the same hospital is counted on its own.
        async with edge(port, "token-b", edge_id="other") as other:
            await started(other)
            await other.shutdown(0)
        # When one ends, a new tunnel of the credential is accepted again.
        await accepted[0].shutdown(0)
        await until(lambda: len(gateway.sessions(HOSPITAL)) == 2)
        await started(tunnels[20])
        assert len(gateway.sessions(HOSPITAL)) == 3
        for t in [*accepted[1:], tunnels[20]]:
            await t.shutdown(0)
        await asyncio.gather(*burst, return_exceptions=True)


async def test_close_credential_ends_only_its_tunnels_with_unauthenticated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    gateway = TunnelGateway(authenticate=authenticate, node_id="n1")
    async with (
        serving(gateway) as port,
        edge(port, "token-a", edge_id="e1") as a1,
        edge(port, "token-a", edge_id="e2") as a2,
        edge(port, "token-b", edge_id="e3") as b1,
    ):
        tasks = [await started(t) for t in (a1, a2, b1)]
        assert gateway.credential_ids() == {"cred-a", "cred-b"}
        ids = {t.session.welcome.session_id for t in (a1, a2)}
        assert gateway.close_credential("cred-a") == 2
        for task in tasks[:2]:
            status = await asyncio.wait_for(task, 5)
            assert (status.code, status.message) == (UNAUTHENTICATED, "credential revoked")
        assert not tasks[2].done()
        assert await echo(gateway) == "echo:x"  # through the other credential's tunnel
        assert gateway.credential_ids() == {"cred-b"}
        lines = [r.getMessage() for r in caplog.records if "closing tunnel" in r.getMessage()]
        assert len(lines) == 2
        for line in lines:
            assert f"hospital {HOSPITAL}" in line
            assert "credential cred-a" in line
            assert "token-a" not in line
        assert {line.split("session ")[1].split(":")[0] for line in lines} == ids
        assert {line.split("edge ")[1].split(",")[0] for line in lines} == {"e1", "e2"}
        # Closing again finds nothing; a new tunnel of the credential is refused at once
        # (its credential check may have passed a moment before the revocation).
        assert gateway.close_credential("cred-a") == 0
        async with edge(port, "token-a", edge_id="e4") as late:
            err = await refused(late)
        assert (err.status.code, err.status.message) == (UNAUTHENTICATED, "credential revoked")
        await b1.shutdown(0)


async def test_revoking_the_intruders_credential_ends_it_and_lets_the_real_edge_in() -> None:
    gateway = TunnelGateway(authenticate=authenticate, liveness_probe=0.5)
    async with serving(gateway) as port, edge(port, "token-b") as intruder:
        intruder_task = await started(intruder)  # it got there first
        async with edge(port, "token-a") as real:
            err = await refused(real)
        assert err.status.code == ALREADY_EXISTS
        assert gateway.close_credential("cred-b") == 1
        status = await asyncio.wait_for(intruder_task, 5)
        assert status.code == UNAUTHENTICATED
        async with edge(port, "token-a") as real:
            await started(real)
            assert [s.hello.edge_id for s in gateway.sessions(HOSPITAL)] == ["edge-a"]
            await real.shutdown(0)
