from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud.config import NodeConfig, TlsMode
from cloud.node import CloudNode
from hplus.cloud.v1 import registry_pb2, registry_pb2_grpc
from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel import TunnelConfig


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
            "hplus.cloud.v1.AccountService",
            "hplus.cloud.v1.EdgeService",
            "hplus.cloud.v1.PatientApiService",
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


async def test_the_registry_has_its_own_port_and_the_tunnel_port_a_small_limit(
    tmp_path: Path,
) -> None:
    cfg = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path,
        tls_mode=TlsMode.OFF,
        tunnel=TunnelConfig(max_inbound_outer_message_bytes=2 * 1024 * 1024),
    )
    async with (
        CloudNode(cfg) as node,
        grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as public,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{node.registry_port}",
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        ) as registry,
    ):
        assert node.registry_port not in (None, node.port, node.internal_port)
        assert "hplus.cloud.v1.RegistryService" in node.registry_service_names
        # The registry answers on its own port, and takes a message the tunnel port refuses.
        big = registry_pb2.PushReleaseRequest(version="1.0.0", image=b"\x00" * (3 << 20))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry_pb2_grpc.RegistryServiceStub(registry).PushRelease(big, timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # it got that far
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await registry_pb2_grpc.RegistryServiceStub(public).ListReleases(
                registry_pb2.ListReleasesRequest(), timeout=5
            )
        assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # A 3 MiB outer message on the tunnel port ends the call before any frame is read.
        connect = public.stream_stream(
            "/hplus.tunnel.v1.TunnelService/Connect",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        call = connect(metadata=(("authorization", "Bearer x"),))
        padding = tunnel_pb2.Frame(stream_id=0)
        padding.hello.edge_id = "e" * (3 << 20)
        await call.write(tunnel_pb2.ConnectRequest(frames=[padding]).SerializeToString())
        assert await call.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.UNAUTHENTICATED,  # refused even earlier: no valid credential
        )


async def test_a_failing_background_loop_stops_the_node_and_everything_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cloud.census import CensusFlusher

    async def broken(self: CensusFlusher) -> None:
        raise RuntimeError("census store gone")

    monkeypatch.setattr(CensusFlusher, "run", broken)
    cfg = NodeConfig(
        listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=tmp_path, node_id="t1"
    )
    node = CloudNode(cfg)
    await node.start()
    await asyncio.wait_for(node.failed.wait(), timeout=10)
    assert "a background loop failed" in caplog.text
    assert "census store gone" in caplog.text
    await node.shutdown()
    await asyncio.wait_for(node.wait(), timeout=10)
    # The ports are released: a node can take them again.
    again = NodeConfig(
        listen=f"127.0.0.1:{node.port}",
        internal_listen=f"127.0.0.1:{node.internal_port}",
        registry_listen=f"127.0.0.1:{node.registry_port}",
        data_dir=tmp_path,
        node_id="t2",
    )
    async with CloudNode(again) as second:
        assert second.port == node.port


async def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    first = NodeConfig(
        listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=tmp_path, node_id="t1"
    )
    async with CloudNode(first) as holder:
        # The registry port is taken: the start fails after the internal and public
        # endpoints were bound and the databases opened.
        clash = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            registry_listen=f"127.0.0.1:{holder.port}",
            data_dir=tmp_path / "second",
            node_id="t2",
        )
        node = CloudNode(clash)
        with pytest.raises(OSError, match="cannot listen"):
            await node.start()
        assert node.internal_port is not None
        # Its internal endpoint was stopped: the port can be bound again.
        reuse = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen=f"127.0.0.1:{node.internal_port}",
            data_dir=tmp_path / "third",
            node_id="t3",
        )
        async with CloudNode(reuse) as third:
            assert third.internal_port == node.internal_port
