"""A small test service and a cloud+edge tunnel over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, wrappers_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mesh.tunnel import (
    EdgeIdentity,
    EdgeTunnel,
    Session,
    TunnelConfig,
    TunnelGateway,
    TunnelServer,
    bearer_token,
)

SERVICE = "hplus.test.Echo"
HOSPITAL = "h-1"
CREDENTIAL = "secret-h-1"

S = wrappers_pb2.StringValue
B = wrappers_pb2.BytesValue
I32 = wrappers_pb2.Int32Value


@dataclass
class ServiceState:
    """What the test servicer observed, for assertions."""

    entered: dict[str, asyncio.Event] = field(default_factory=dict)
    cancelled: dict[str, asyncio.Event] = field(default_factory=dict)
    remaining: list[float | None] = field(default_factory=list)
    metadata: list[tuple[tuple[str, Any], ...]] = field(default_factory=list)

    def event(self, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())


def rich_status() -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.ErrorInfo(reason="SLOT_TAKEN", domain="hplus", metadata={"a": "b"})
    )
    return status_pb2.Status(
        code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message="taken", details=[detail]
    )


class EchoServicer:
    """Handlers of the test service; the same object serves a port and the tunnel."""

    def __init__(self) -> None:
        self.state = ServiceState()

    async def unary(self, request: S, context: grpc.aio.ServicerContext[Any, Any]) -> S:
        text = request.value
        md = tuple((k, v) for k, v in (context.invocation_metadata() or ()))
        self.state.metadata.append(md)
        if text == "abort":
            status = rpc_status.to_status(rich_status())
            await context.abort(status.code, status.details, status.trailing_metadata)
        if text == "metadata":
            await context.send_initial_metadata(
                (("x-initial", "1"), ("x-initial-bin", b"\x00\x01"))
            )
            context.set_trailing_metadata((("x-trailer", "t"), ("x-trailer-bin", b"\xff\x00")))
            return S(value="metadata")
        if text == "set-code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("no such thing")
            context.set_trailing_metadata((("x-why", "gone"),))
            return S()
        if text == "deadline":
            remaining = context.time_remaining()
            self.state.remaining.append(remaining)
            return S(value=str(remaining))
        if text == "raise":
            raise ValueError("boom")
        if text.startswith("wait:"):
            key = text[5:]
            self.state.event(self.state.entered, key).set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.state.event(self.state.cancelled, key).set()
                raise
        if text.startswith("big:"):
            return S(value="x" * int(text[4:]))
        return S(value=f"echo:{text}")

    async def server_stream(
        self, request: I32, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[B]:
        count = request.value
        size = 16 * 1024 if count >= 0 else 10
        count = abs(count)
        for index in range(count):
            if count == 7 and index == 3:
                await context.abort(grpc.StatusCode.ABORTED, "stopped early")
            yield B(value=bytes([index % 256]) * size)

    async def client_stream(
        self, requests: AsyncIterator[S], context: grpc.aio.ServicerContext[Any, Any]
    ) -> S:
        parts = [request.value async for request in requests]
        return S(value="+".join(parts))

    async def bidi(
        self, requests: AsyncIterator[S], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[S]:
        async for request in requests:
            if request.value == "stop":
                context.set_code(grpc.StatusCode.OUT_OF_RANGE)
                context.set_details("stop requested")
                return
            yield S(value=request.value.upper())

    async def read_write(self, requests: object, context: Any) -> None:
        """Uses the context API (read/write, done callbacks) instead of iterators."""
        context.add_done_callback(lambda ctx: self.state.event(self.state.entered, "done").set())
        self.state.metadata.append((("peer", context.peer()),))
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                break
            await context.write(S(value=request.value[::-1]))
        context.set_trailing_metadata((("x-cancelled", str(context.cancelled())),))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(
                    self.unary,
                    request_deserializer=S.FromString,
                    response_serializer=S.SerializeToString,
                ),
                "ServerStream": grpc.unary_stream_rpc_method_handler(
                    self.server_stream,
                    request_deserializer=I32.FromString,
                    response_serializer=B.SerializeToString,
                ),
                "ClientStream": grpc.stream_unary_rpc_method_handler(
                    self.client_stream,
                    request_deserializer=S.FromString,
                    response_serializer=S.SerializeToString,
                ),
                "ReadWrite": grpc.stream_stream_rpc_method_handler(
                    self.read_write,
                    request_deserializer=S.FromString,
                    response_serializer=S.SerializeToString,
                ),
                "Bidi": grpc.stream_stream_rpc_method_handler(
                    self.bidi,
                    request_deserializer=S.FromString,
                    response_serializer=S.SerializeToString,
                ),
            },
        )


class EchoStub:
    """A hand-written stub, built like generated ones (``channel.unary_unary(...)``)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.Unary = channel.unary_unary(
            f"/{SERVICE}/Unary",
            request_serializer=S.SerializeToString,
            response_deserializer=S.FromString,
        )
        self.ServerStream = channel.unary_stream(
            f"/{SERVICE}/ServerStream",
            request_serializer=I32.SerializeToString,
            response_deserializer=B.FromString,
        )
        self.ClientStream = channel.stream_unary(
            f"/{SERVICE}/ClientStream",
            request_serializer=S.SerializeToString,
            response_deserializer=S.FromString,
        )
        self.Bidi = channel.stream_stream(
            f"/{SERVICE}/Bidi",
            request_serializer=S.SerializeToString,
            response_deserializer=S.FromString,
        )
        self.ReadWrite = channel.stream_stream(
            f"/{SERVICE}/ReadWrite",
            request_serializer=S.SerializeToString,
            response_deserializer=S.FromString,
        )
        self.Missing = channel.unary_unary(
            f"/{SERVICE}/Missing",
            request_serializer=S.SerializeToString,
            response_deserializer=S.FromString,
        )


def authenticate(metadata: list[tuple[str, str | bytes]]) -> str | None:
    return HOSPITAL if bearer_token(metadata) == CREDENTIAL else None


@dataclass
class Rig:
    """A running cloud gateway, an edge with the echo service, and a direct server."""

    gateway: TunnelGateway
    edge: EdgeTunnel
    servicer: EchoServicer
    tunnel_stub: EchoStub
    direct_stub: EchoStub
    cloud_port: int
    tunnel_server: TunnelServer

    @property
    def edge_session(self) -> Session:
        return self.edge.session

    @property
    def cloud_session(self) -> Session:
        session = self.gateway.pick(HOSPITAL)
        assert session is not None
        return session


@contextlib.asynccontextmanager
async def running_rig(
    *,
    edge_config: TunnelConfig | None = None,
    cloud_config: TunnelConfig | None = None,
) -> AsyncIterator[Rig]:
    servicer = EchoServicer()
    gateway = TunnelGateway(authenticate=authenticate, node_id="test-node", config=cloud_config)
    cloud = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    from hplus.tunnel.v1 import tunnel_pb2_grpc

    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, cloud)
    cloud_port = cloud.add_insecure_port("127.0.0.1:0")
    direct = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    direct.add_generic_rpc_handlers((servicer.handler(),))
    direct_port = direct.add_insecure_port("127.0.0.1:0")
    await cloud.start()
    await direct.start()
    edge_channel = grpc.aio.insecure_channel(f"127.0.0.1:{cloud_port}")
    direct_channel = grpc.aio.insecure_channel(f"127.0.0.1:{direct_port}")
    tunnel_server = TunnelServer()
    tunnel_server.add_generic_rpc_handlers((servicer.handler(),))
    edge = EdgeTunnel(
        edge_channel,
        tunnel_server,
        credential=CREDENTIAL,
        identity=EdgeIdentity(hospital_id=HOSPITAL, edge_id="edge-a"),
        config=edge_config,
    )
    try:
        async with edge:
            await asyncio.wait_for(gateway.wait_for_hospital(HOSPITAL), 10)
            await asyncio.wait_for(edge.wait_ready(), 10)
            yield Rig(
                gateway=gateway,
                edge=edge,
                servicer=servicer,
                tunnel_stub=EchoStub(gateway.channel(HOSPITAL)),
                direct_stub=EchoStub(direct_channel),
                cloud_port=cloud_port,
                tunnel_server=tunnel_server,
            )
            await edge.shutdown(1.0)
    finally:
        await gateway.shutdown(0.5)
        await edge_channel.close()
        await direct_channel.close()
        await cloud.stop(None)
        await direct.stop(None)
