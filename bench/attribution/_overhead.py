"""What recording failures costs a call that succeeds, in one run, calls interleaved in rounds:
the same echo server without interceptors, with an interceptor that passes the handler
through (grpc's interceptor pipeline alone), and with the recorder's interceptor."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["measure"]

_METHOD = "/bench.attribution.Echo/Echo"


class _PassThrough:
    """An interceptor that returns the handler as it is (grpc's pipeline, nothing more)."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


async def _server(interceptors: list[Any]) -> tuple[Any, int]:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.attribution.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _rounds(rounds: int, calls: int) -> dict[str, float]:
    import grpc

    from cloud.attribution import FailureRecorder, FailureStore, migrate_attribution
    from cloud.db import create_engine

    with tempfile.TemporaryDirectory(prefix="bench-attr-cost-") as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'fleet.db'}")
        await migrate_attribution(engine)
        recorder = FailureRecorder(FailureStore(engine), node="bench")
        passing = grpc.aio.ServerInterceptor.register(_PassThrough)
        servers = {
            "plain": await _server([]),
            "pass_through": await _server([passing()]),
            "recorded": await _server([recorder.interceptor()]),
        }
        times: dict[str, list[float]] = {name: [] for name in servers}
        channels = {
            name: grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            for name, (_, port) in servers.items()
        }
        try:
            calls_of: dict[str, Any] = {
                name: channel.unary_unary(_METHOD) for name, channel in channels.items()
            }
            for name in calls_of:  # warm up each
                for _ in range(200):
                    await calls_of[name](b"x", timeout=10)
            names = list(calls_of)
            for n in range(rounds):
                order = names[n % 3 :] + names[: n % 3]  # each kind first in turn
                for name in order:
                    call = calls_of[name]
                    started = time.perf_counter()
                    for _ in range(calls):
                        await call(b"x", timeout=10)
                    times[name].append((time.perf_counter() - started) / calls)
        finally:
            for channel in channels.values():
                await channel.close()
            for server, _ in servers.values():
                await server.stop(0)
            await engine.dispose()
        assert recorder.pending() == 0  # nothing was recorded for calls that succeeded
    us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    return {
        "plain_us_per_call": round(us["plain"], 1),
        "pass_through_us_per_call": round(us["pass_through"], 1),
        "recorded_us_per_call": round(us["recorded"], 1),
        "ratio_to_pass_through": round(us["recorded"] / us["pass_through"], 3),
        "ratio_to_plain": round(us["recorded"] / us["plain"], 3),
    }


def measure(*, rounds: int = 20, calls: int = 500) -> dict[str, float]:
    """Median time of a successful unary call: no interceptor, a pass-through one, the
    recorder's."""
    return asyncio.run(_rounds(rounds, calls))
