"""A real registry behind a real in-process grpc.aio server, on each test database."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import compat
from cloud.registry import MAX_MESSAGE_BYTES, Role, TokenStore, build_registry
from hplus.cloud.v1 import registry_pb2, registry_pb2_grpc

ECHO_V1 = """
syntax = "proto3";
package {pkg}.v1;

// Echoes text.
service EchoService {{
  // Returns the text, repeated.
  rpc Echo(EchoRequest) returns (EchoResponse);
}}

// Request of Echo.
message EchoRequest {{
  string text = 1;
  int32 times = 2;
}}

// Response of Echo.
message EchoResponse {{
  string text = 1;
}}
"""

_cache: dict[tuple[str, str], bytes] = {}


def image_of(tmp_path: Path, proto: str, *, pkg: str = "regtest") -> bytes:
    """Compile one proto file (``<pkg>/v1/echo.proto``) into a serialized image."""
    key = (proto, pkg)
    if key not in _cache:
        root = tmp_path / f"src-{len(_cache)}"
        (root / pkg / "v1").mkdir(parents=True)
        (root / pkg / "v1" / "echo.proto").write_text(textwrap.dedent(proto.format(pkg=pkg)))
        _cache[key] = compat.compile_protos(root).SerializeToString()
    return _cache[key]


def v1(tmp_path: Path, pkg: str = "regtest") -> bytes:
    return image_of(tmp_path, ECHO_V1, pkg=pkg)


def v1_plus(tmp_path: Path, pkg: str = "regtest") -> bytes:
    """v1 plus a response field: compatible."""
    text = ECHO_V1.replace("string text = 1;\n}}\n", "string text = 1;\n  int32 count = 2;\n}}\n")
    assert text.count("count") == 1
    return image_of(tmp_path, text, pkg=pkg)


def v2_breaking(tmp_path: Path) -> bytes:
    """v1 with ``EchoRequest.times`` deleted without reservation: breaking."""
    return image_of(tmp_path, ECHO_V1.replace("  int32 times = 2;\n", ""))


def v3_after_break(tmp_path: Path) -> bytes:
    """v2 plus a compatible addition."""
    text = ECHO_V1.replace(
        "string text = 1;\n}}\n", "string text = 1;\n  int32 count = 2;\n}}\n"
    ).replace("  int32 times = 2;\n", "")
    assert "count" in text.split("message EchoResponse")[1]
    return image_of(tmp_path, text)


@dataclasses.dataclass
class Registry:
    stub: registry_pb2_grpc.RegistryServiceStub
    engine: AsyncEngine
    tokens: TokenStore
    manager: str
    service: str
    target: str

    @property
    def rm(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.manager}"),)

    @property
    def svc(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.service}"),)

    async def push(
        self, version: str, image: bytes, **kw: object
    ) -> registry_pb2.PushReleaseResponse:
        request = registry_pb2.PushReleaseRequest(version=version, image=image, **kw)  # type: ignore[arg-type]
        return await self.stub.PushRelease(request, metadata=self.rm, timeout=30)


async def start_server(
    servicer: registry_pb2_grpc.RegistryServiceServicer,
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def registry(db_engine: AsyncEngine) -> AsyncIterator[Registry]:
    servicer = await build_registry(db_engine)
    tokens = TokenStore(db_engine)
    manager = await tokens.issue("alice", Role.RELEASE_MANAGER, actor="test")
    service = await tokens.issue("fleet", Role.SERVICE, actor="test")
    server, port = await start_server(servicer)
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    )
    try:
        yield Registry(
            registry_pb2_grpc.RegistryServiceStub(channel),
            db_engine,
            tokens,
            manager.token,
            service.token,
            target,
        )
    finally:
        await channel.close()
        await server.stop(None)


Images = Callable[[Path], bytes]
