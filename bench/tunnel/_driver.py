"""The benchmark driver: the cloud side (client and gateway) in this process.

The same servicer runs in a child process, on a direct ``grpc.aio`` port and behind a
tunnel to this process's gateway; both paths are measured in the same run, over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

from bench.tunnel._edge import CREDENTIAL_PREFIX, SERVICE
from cloud.census import FieldCensus
from hplus.tunnel.v1 import tunnel_pb2_grpc
from mesh.tunnel import TunnelChannel, TunnelGateway, bearer_token

Unary = Callable[..., Any]


def _rss_kib(pid: int | None = None) -> int:
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _authenticate(metadata: list[tuple[str, str | bytes]]) -> str | None:
    token = bearer_token(metadata)
    if token is None or not token.startswith(CREDENTIAL_PREFIX):
        return None
    return token[len(CREDENTIAL_PREFIX) :]


class _Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.unary = channel.unary_unary(
            f"/{SERVICE}/Unary",
            request_serializer=wrappers_pb2.BytesValue.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )
        self.stream = channel.unary_stream(
            f"/{SERVICE}/Stream",
            request_serializer=wrappers_pb2.Int32Value.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )


_REQUEST = wrappers_pb2.BytesValue(value=b"q" * 100)


async def _unary_c1(stubs: _Stubs, seconds: float) -> dict[str, float]:
    latencies = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        start = time.perf_counter()
        await stubs.unary(_REQUEST, timeout=10)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "calls_per_s": len(latencies) / seconds,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


async def _unary_cn(stubs: _Stubs, seconds: float, concurrency: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    latencies: list[float] = []

    async def worker() -> None:
        while loop.time() < end:
            start = time.perf_counter()
            await stubs.unary(_REQUEST, timeout=10)
            latencies.append(time.perf_counter() - start)

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - began
    latencies.sort()
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }


async def _streaming(stubs: _Stubs, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    end = began + seconds
    count = 0
    while loop.time() < end:
        async for _ in stubs.stream(wrappers_pb2.Int32Value(value=2000), timeout=30):
            count += 1
    return {"messages_per_s": count / (loop.time() - began)}


CENSUS_RATE = 0.01
"""The field census sampling rate measured (the node's default)."""


def _census_pool() -> descriptor_pool.DescriptorPool:
    # The bench service is not a contract; describe it so the census really decodes it.
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    package, _, name = SERVICE.rpartition(".")
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bench_census.proto", package=package, dependency=[wrappers_pb2.DESCRIPTOR.name]
    )
    svc = fdp.service.add(name=name)
    svc.method.add(
        name="Unary",
        input_type=".google.protobuf.BytesValue",
        output_type=".google.protobuf.BytesValue",
    )
    pool.Add(fdp)
    return pool


async def _census_cost(gateway: TunnelGateway, seconds: float) -> dict[str, Any]:
    """Unary c64 through the tunnel with and without the field census, interleaved."""
    census = FieldCensus(rate=CENSUS_RATE, pool=_census_pool())
    plain = _Stubs(gateway.channel("h0"))
    counted = _Stubs(TunnelChannel(lambda: gateway.pick("h0"), hooks=[census]))
    stop = asyncio.Event()

    async def drainer() -> None:  # the node drains on the same loop, so it is measured
        while not stop.is_set():
            census.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    task = asyncio.get_running_loop().create_task(drainer())
    runs: dict[str, list[float]] = {"plain": [], "census": []}
    try:
        for _ in range(3):
            runs["plain"].append((await _unary_cn(plain, seconds, 64))["calls_per_s"])
            runs["census"].append((await _unary_cn(counted, seconds, 64))["calls_per_s"])
    finally:
        stop.set()
        await task
    census.drain()
    plain_cps = statistics.median(runs["plain"])
    census_cps = statistics.median(runs["census"])
    return {
        "rate": CENSUS_RATE,
        "plain_calls_per_s": plain_cps,
        "census_calls_per_s": census_cps,
        "overhead": 1 - census_cps / plain_cps,
        "messages_counted": sum(r.sampled for r in census.rows() if r.field_path == "value"),
    }


async def _idle_tunnels(
    gateway: TunnelGateway, cloud_port: int, count: int, per_process: int
) -> dict[str, Any]:
    before = _rss_kib()
    began = time.perf_counter()
    children = []
    for first in range(1, count + 1, per_process):
        size = min(per_process, count + 1 - first)
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.tunnel",
                "--role",
                "idle",
                "--cloud",
                f"127.0.0.1:{cloud_port}",
                "--count",
                str(size),
                "--first",
                str(first),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
    lines = [child.stdout.readline() for child in children if child.stdout is not None]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*lines), timeout=300)
    connect_s = time.perf_counter() - began
    held = len([s for s in gateway.sessions() if s.ready.is_set()]) - 1  # minus the bench's own
    after = _rss_kib()
    edge_rss = sum(_rss_kib(child.pid) for child in children)
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
    await asyncio.gather(*(child.wait() for child in children))
    return {
        "idle_tunnels": held,
        "idle_tunnels_requested": count,
        "connect_seconds": round(connect_s, 2),
        "gateway_rss_before_kib": before,
        "gateway_rss_after_kib": after,
        "gateway_kib_per_idle_tunnel": round((after - before) / max(held, 1), 1),
        "edge_processes_rss_kib": edge_rss,
    }


async def run(*, quick: bool, idle: int) -> dict[str, Any]:
    """Runs every measurement and returns the results (also printed as a table)."""
    seconds = 2.0 if quick else 6.0
    gateway = TunnelGateway(authenticate=_authenticate, node_id="bench")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    edge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.tunnel",
        "--role",
        "edge",
        "--cloud",
        f"127.0.0.1:{port}",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert edge.stdout is not None
        line = (await asyncio.wait_for(edge.stdout.readline(), 30)).decode().split()
        direct_port = int(line[1])
        await asyncio.wait_for(gateway.wait_for_hospital("h0"), 30)
        direct_channel = grpc.aio.insecure_channel(f"127.0.0.1:{direct_port}")
        direct = _Stubs(direct_channel)
        tunnel = _Stubs(gateway.channel("h0"))
        results: dict[str, Any] = {"quick": quick, "seconds_per_measurement": seconds}
        short = 0.3
        await _unary_c1(direct, short)
        await _unary_c1(tunnel, short)
        results["unary_c1"] = {
            "direct": await _unary_c1(direct, seconds),
            "tunnel": await _unary_c1(tunnel, seconds),
        }
        await _unary_cn(direct, short, 64)
        await _unary_cn(tunnel, short, 64)
        results["unary_c64"] = {
            "direct": await _unary_cn(direct, seconds, 64),
            "tunnel": await _unary_cn(tunnel, seconds, 64),
        }
        await _streaming(direct, short)
        await _streaming(tunnel, short)
        results["server_streaming"] = {
            "direct": await _streaming(direct, seconds),
            "tunnel": await _streaming(tunnel, seconds),
        }
        await direct_channel.close()
        results["census"] = await _census_cost(gateway, seconds / 2)
        results["idle"] = await _idle_tunnels(gateway, port, idle, 1000)
    finally:
        assert edge.stdin is not None
        edge.stdin.close()
        await edge.wait()
        await gateway.shutdown(1.0)
        await server.stop(None)
    return results


def report(results: dict[str, Any]) -> str:
    """Formats the results as a table with tunnel/direct ratios and targets."""
    u1 = results["unary_c1"]
    u64 = results["unary_c64"]
    st = results["server_streaming"]
    idle = results["idle"]
    rows = [
        ("unary c1 calls/s", u1["direct"]["calls_per_s"], u1["tunnel"]["calls_per_s"], ""),
        ("unary c1 p50 µs", u1["direct"]["p50_us"], u1["tunnel"]["p50_us"], "≤ 1.5x"),
        ("unary c1 p99 µs", u1["direct"]["p99_us"], u1["tunnel"]["p99_us"], ""),
        ("unary c64 calls/s", u64["direct"]["calls_per_s"], u64["tunnel"]["calls_per_s"], "≥ 0.8x"),
        ("unary c64 p50 µs", u64["direct"]["p50_us"], u64["tunnel"]["p50_us"], ""),
        ("unary c64 p99 µs", u64["direct"]["p99_us"], u64["tunnel"]["p99_us"], ""),
        (
            "server-stream msg/s",
            st["direct"]["messages_per_s"],
            st["tunnel"]["messages_per_s"],
            "≥ 0.7x",
        ),
    ]
    lines = [f"{'measure':<22}{'direct':>12}{'tunnel':>12}{'ratio':>9}  target"]
    for name, direct, tunnel, target in rows:
        ratio = tunnel / direct if direct else float("nan")
        lines.append(f"{name:<22}{direct:>12.0f}{tunnel:>12.0f}{ratio:>8.2f}x  {target}")
    c = results["census"]
    lines.append(
        f"field census at rate {c['rate']}: unary c64 {c['census_calls_per_s']:.0f} vs "
        f"{c['plain_calls_per_s']:.0f} calls/s without, overhead {c['overhead'] * 100:.1f}% "
        f"(target < 5%), {c['messages_counted']} messages counted"
    )
    lines.append(
        f"idle tunnels: {idle['idle_tunnels']} on one gateway, "
        f"{idle['gateway_kib_per_idle_tunnel']} KiB RSS each (target ≤ 100 KiB), "
        f"connected in {idle['connect_seconds']} s"
    )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON object: raw figures plus ratios."""
    u1 = results["unary_c1"]
    u64 = results["unary_c64"]
    st = results["server_streaming"]
    ratios = {
        "unary_c1_p50_ratio": u1["tunnel"]["p50_us"] / u1["direct"]["p50_us"],
        "unary_c64_throughput_ratio": u64["tunnel"]["calls_per_s"] / u64["direct"]["calls_per_s"],
        "streaming_ratio": st["tunnel"]["messages_per_s"] / st["direct"]["messages_per_s"],
        "idle_kib_per_tunnel": results["idle"]["gateway_kib_per_idle_tunnel"],
        "census_overhead": results["census"]["overhead"],
    }
    out = dict(results)
    out["ratios"] = {key: round(value, 3) for key, value in ratios.items()}
    out["cpus"] = os.cpu_count()
    return out


def main_driver(*, quick: bool, idle: int) -> None:
    """Runs the benchmark and prints the table, then the JSON object on the last line."""
    results = asyncio.run(run(quick=quick, idle=idle))
    print(report(results))
    print(json.dumps(summary(results), sort_keys=True))
