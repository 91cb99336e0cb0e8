"""The edge process of the benchmark: the servicer on a direct port and behind tunnels.

Run by the driver as ``python -m bench.tunnel --role edge --cloud 127.0.0.1:PORT`` (prints
``READY <direct port>``) or ``--role idle --count N`` (opens N tunnels that carry nothing,
prints ``READY``). Both run until their standard input closes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.protobuf import wrappers_pb2

from frontend_server.traces import SpanRing
from mesh.observability import ObservabilityConfig, Tracing, TunnelServerHook
from mesh.tunnel import CallHook, EdgeIdentity, EdgeTunnel, TunnelServer

SERVICE = "hplus.bench.Echo"
CREDENTIAL_PREFIX = "bench-"


class BenchServicer:
    """Echo for unary calls; a burst of small messages for server streaming."""

    async def unary(
        self, request: wrappers_pb2.BytesValue, context: grpc.aio.ServicerContext[object, object]
    ) -> wrappers_pb2.BytesValue:
        return request

    async def stream(
        self, request: wrappers_pb2.Int32Value, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[wrappers_pb2.BytesValue]:
        payload = wrappers_pb2.BytesValue(value=b"s" * 100)
        for _ in range(request.value):
            yield payload

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(
                    self.unary,
                    request_deserializer=wrappers_pb2.BytesValue.FromString,
                    response_serializer=wrappers_pb2.BytesValue.SerializeToString,
                ),
                "Stream": grpc.unary_stream_rpc_method_handler(
                    self.stream,
                    request_deserializer=wrappers_pb2.Int32Value.FromString,
                    response_serializer=wrappers_pb2.BytesValue.SerializeToString,
                ),
            },
        )


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def serve_edge(cloud: str, *, hospital: str = "h0", observe: str = "") -> None:
    """Serves the bench servicer on a direct port and through one tunnel.

    With ``observe`` (a directory), the tunnel server runs the edge's observability as
    ``EdgeApp`` does: a SERVER span per call (current while the servicer runs), RPC
    metrics, spans flushed to a span ring in that directory.
    """
    servicer = BenchServicer()
    direct = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    direct.add_generic_rpc_handlers((servicer.handler(),))
    port = direct.add_insecure_port("127.0.0.1:0")
    await direct.start()
    hooks: list[CallHook] = []
    tracing = ring = None
    if observe:
        ring = SpanRing(Path(observe) / "traces.db", capacity=2_000_000)
        ring.open()
        tracing = Tracing(
            service="hplus-edge",
            node="bench-edge",
            sink=ring,
            sample_rate=ObservabilityConfig().span_sample_rate,
        )
        tracing.start()
        hooks.append(TunnelServerHook(tracing))
    registrar = TunnelServer(hooks=hooks)
    registrar.add_generic_rpc_handlers((servicer.handler(),))
    channel = grpc.aio.insecure_channel(cloud)
    tunnel = EdgeTunnel(
        channel,
        registrar,
        credential=f"{CREDENTIAL_PREFIX}{hospital}",
        identity=EdgeIdentity(hospital_id=hospital, edge_id="bench-edge"),
    )
    async with tunnel:
        await tunnel.wait_ready()
        print(f"READY {port}", flush=True)
        await _stdin_closed()
        await tunnel.shutdown(1.0)
    await channel.close()
    await direct.stop(None)
    if tracing is not None and ring is not None:
        await tracing.shutdown()
        print(f"SPANS {tracing.stored} {ring.count()}", flush=True)
        ring.close()


async def serve_idle(cloud: str, count: int, first: int) -> None:
    """Holds ``count`` idle tunnels, each on its own connection (hospitals first…)."""
    registrar = TunnelServer()
    registrar.add_generic_rpc_handlers((BenchServicer().handler(),))
    channels = []
    tunnels = []
    wave = 100  # edges connect in waves, as they do with reconnect jitter
    for start in range(first, first + count, wave):
        batch = []
        for index in range(start, min(start + wave, first + count)):
            channel = grpc.aio.insecure_channel(
                cloud, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            tunnel = EdgeTunnel(
                channel,
                registrar,
                credential=f"{CREDENTIAL_PREFIX}h{index}",
                identity=EdgeIdentity(hospital_id=f"h{index}", edge_id=f"idle-{index}"),
            )
            batch.append(tunnel)
            await tunnel.__aenter__()
        await asyncio.gather(*(t.wait_ready() for t in batch))
        tunnels.extend(batch)
    print("READY", flush=True)
    await _stdin_closed()
    await asyncio.gather(*(t.shutdown(0.0) for t in tunnels))
    await asyncio.gather(*(c.close() for c in channels))
