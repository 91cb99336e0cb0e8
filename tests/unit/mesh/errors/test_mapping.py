"""One mapping on a grpc.aio server and on the tunnel's TunnelServer alike, and the client
wrapper that turns each failed call back into the tree."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

import mesh.errors as errors
from hplus.hospital.v1 import directory_pb2, directory_pb2_grpc
from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel import Role, Session, TunnelChannel, TunnelServer, memory_transport_pair

Req = directory_pb2.ListDepartmentsRequest
Ctx = grpc.aio.ServicerContext[Any, Any]


class DomainRefusal(Exception):
    """A domain error the side's table knows."""


def table(exc: Exception) -> errors.StatusError | None:
    if isinstance(exc, DomainRefusal):
        return errors.FailedPrecondition("the rule refuses", reason="RULE", metadata={"r": "x"})
    return None


MAPPING = errors.ErrorMapping(
    domain="test.hplus", translate=table, logger=logging.getLogger("test.errors")
)

RAISES: dict[str, Callable[[], Exception]] = {
    "invalid": lambda: errors.InvalidArgument(field_violations=[("campus_id", "unknown")]),
    "busy": lambda: errors.ResourceExhausted("queue full", reason="QUEUE_FULL", retry_delay=2),
    "domain": lambda: DomainRefusal("patient 110101199003074518 is refused"),
    "bug": lambda: RuntimeError("patient 110101199003074518 broke it"),
}


@MAPPING.servicer
class Directory(directory_pb2_grpc.DirectoryServiceServicer):
    async def ListDepartments(
        self, request: Req, context: Ctx
    ) -> directory_pb2.ListDepartmentsResponse:
        if request.campus_id == "abort":  # a servicer that aborts by itself still works
            await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
        raise RAISES[request.campus_id]()


async def countdown(
    request: wrappers_pb2.Int32Value, context: Ctx
) -> AsyncIterator[wrappers_pb2.Int32Value]:
    for left in range(request.value, 0, -1):
        yield wrappers_pb2.Int32Value(value=left)
    raise errors.Unavailable("ran out", reason="EMPTY")


def countdown_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.Countdown",
        {
            "Run": grpc.unary_stream_rpc_method_handler(
                MAPPING.handler(countdown),
                request_deserializer=wrappers_pb2.Int32Value.FromString,
                response_serializer=wrappers_pb2.Int32Value.SerializeToString,
            )
        },
    )


@contextlib.asynccontextmanager
async def grpc_server() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(Directory(), server)
    server.add_generic_rpc_handlers((countdown_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def tunnel_server() -> AsyncIterator[grpc.aio.Channel]:
    edge_end, cloud_end = memory_transport_pair()
    server = TunnelServer()
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(Directory(), server)
    server.add_generic_rpc_handlers((countdown_handler(),))
    edge = Session(
        edge_end,
        role=Role.EDGE,
        hello=tunnel_pb2.Hello(hospital_id="h", edge_id="e"),
        on_open=server.on_open,
    )
    cloud = Session(cloud_end, role=Role.CLOUD)
    tasks = [asyncio.ensure_future(edge.run()), asyncio.ensure_future(cloud.run())]
    await asyncio.wait_for(asyncio.gather(edge.ready.wait(), cloud.ready.wait()), 5)
    try:
        yield TunnelChannel(cloud)
    finally:
        await cloud.drain(1.0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


@pytest.fixture(params=["grpc.aio", "tunnel"])
async def channel(request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    serve = grpc_server if request.param == "grpc.aio" else tunnel_server
    async with serve() as channel:
        yield channel


async def fail(channel: grpc.aio.Channel, case: str) -> errors.StatusError:
    stub = errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))
    with pytest.raises(errors.StatusError) as info:
        await stub.ListDepartments(Req(campus_id=case), timeout=5)
    assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)
    return info.value


async def test_field_violations_reach_the_caller(channel: grpc.aio.Channel) -> None:
    err = await fail(channel, "invalid")
    assert type(err) is errors.InvalidArgument
    assert err.message == "invalid request: campus_id: unknown"
    assert err.field_violations == (errors.FieldViolation("campus_id", "unknown"),)


async def test_retry_delay_and_reason_reach_the_caller(channel: grpc.aio.Channel) -> None:
    err = await fail(channel, "busy")
    assert type(err) is errors.ResourceExhausted
    assert (err.reason, err.domain, err.retry_delay) == ("QUEUE_FULL", "test.hplus", 2.0)


async def test_the_side_table_translates_domain_errors(channel: grpc.aio.Channel) -> None:
    err = await fail(channel, "domain")
    assert type(err) is errors.FailedPrecondition
    assert (err.reason, err.metadata) == ("RULE", {"r": "x"})
    assert "110101" not in err.message


async def test_a_servicer_may_still_abort_itself(channel: grpc.aio.Channel) -> None:
    err = await fail(channel, "abort")
    assert (type(err), err.message) == (errors.NotFound, "gone")


async def test_a_bug_is_internal_with_a_correlation_id_logged_once(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    err = await fail(channel, "bug")
    assert type(err) is errors.Internal
    correlation = err.metadata[errors.CORRELATION_KEY]
    assert err.reason == errors.INTERNAL_REASON
    assert err.message == f"internal error (correlation id {correlation})"
    assert "110101" not in err.message
    logged = [r for r in caplog.records if correlation in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert "broke it" in str(logged[0].exc_info[1])
    assert "DirectoryService.ListDepartments" in logged[0].getMessage()
    assert sum(r.exc_info is not None for r in caplog.records) == 1  # once, not per layer


async def test_methods_the_servicer_does_not_implement_stay_unimplemented(
    channel: grpc.aio.Channel,
) -> None:
    stub = errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))
    with pytest.raises(errors.Unimplemented):
        await stub.ListDoctors(directory_pb2.ListDoctorsRequest(), timeout=5)


async def test_a_streaming_handler_fails_after_its_messages(channel: grpc.aio.Channel) -> None:
    run = errors.wrap(
        channel.unary_stream(
            "/test.Countdown/Run",
            request_serializer=wrappers_pb2.Int32Value.SerializeToString,
            response_deserializer=wrappers_pb2.Int32Value.FromString,
        )
    )
    seen: list[int] = []

    async def read_all() -> None:
        async for item in run(wrappers_pb2.Int32Value(value=3), timeout=5):
            seen.append(item.value)

    with pytest.raises(errors.Unavailable) as info:
        await read_all()
    assert seen == [3, 2, 1]
    assert info.value.reason == "EMPTY"


def test_servicer_methods_must_be_async() -> None:
    class Sync(directory_pb2_grpc.DirectoryServiceServicer):
        def ListDepartments(self, request: Req, context: Ctx) -> Any:
            return None

    with pytest.raises(TypeError, match="must be async"):
        MAPPING.servicer(Sync)


def test_only_generated_servicers_are_decorated() -> None:
    with pytest.raises(TypeError, match="generated servicer"):
        MAPPING.servicer(object)
    assert errors.mapping_of(Directory) is MAPPING
    assert errors.mapping_of(Directory.ListDepartments) is MAPPING
