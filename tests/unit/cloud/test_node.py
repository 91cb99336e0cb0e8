from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud.config import NodeConfig, TlsMode
from cloud.node import CloudNode


def secure_channel(node: CloudNode) -> grpc.aio.Channel:
    assert node.tls is not None
    creds = grpc.ssl_channel_credentials(root_certificates=node.tls.ca_cert.read_bytes())
    return grpc.aio.secure_channel(f"localhost:{node.port}", creds)


async def test_node_serves_health_and_reflection_over_tls(tmp_path: Path) -> None:
    cfg = NodeConfig(
        listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=tmp_path, node_id="t1"
    )
    async with CloudNode(cfg) as node, secure_channel(node) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=5)]
        listed = {s.name for s in replies[0].list_services_response.service}
        assert listed == {
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "hplus.tunnel.v1.TunnelService",
            "hplus.cloud.v1.RegistryService",
            "hplus.cloud.v1.AccountService",
        }
        fd = descriptor_pb2.FileDescriptorProto.FromString(
            replies[1].file_descriptor_response.file_descriptor_proto[0]
        )
        assert fd.package == "grpc.health.v1"
    # After shutdown the port no longer answers.
    async with secure_channel(node) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_dev_pki_is_made_once_and_reused(tmp_path: Path) -> None:
    cfg = NodeConfig(
        listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=tmp_path, node_id="t1"
    )
    async with CloudNode(cfg):
        pass
    ca = (tmp_path / "tls/ca.pem").read_bytes()
    assert (tmp_path / "tls/server-key.pem").stat().st_mode & 0o777 == 0o600
    async with CloudNode(cfg) as node:
        assert node.tls is not None
        assert node.tls.ca_cert.read_bytes() == ca


async def test_plaintext_mode(tmp_path: Path) -> None:
    cfg = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path,
        tls_mode=TlsMode.OFF,
    )
    async with CloudNode(cfg) as node, grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not (tmp_path / "tls").exists()


async def test_port_in_use_is_an_error(tmp_path: Path) -> None:
    cfg = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path,
        tls_mode=TlsMode.OFF,
    )
    async with CloudNode(cfg) as first:
        taken = NodeConfig(
            listen=f"127.0.0.1:{first.port}",
            internal_listen="127.0.0.1:0",
            data_dir=tmp_path,
            tls_mode=TlsMode.OFF,
        )
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            await CloudNode(taken).start()
