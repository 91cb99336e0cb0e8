"""``python -m bench.liveconfig [--calls N] [--repeat N]``: the cost of routing by profile.

Every hospital call now goes through the :class:`~frontend_server.liveconfig.ServiceSwitch`
(a generic handler that looks the method up in the active profile's registrar and counts the
call on it). This measures that dispatch against the servicer registered directly on the
tunnel server, as before, in the same run: lookup plus invocation of a trivial unary
handler, N calls per round, the variants interleaved. Prints a table and, on the last line,
the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import grpc

from frontend_server.liveconfig import Generation, ServiceSwitch
from mesh.tunnel import TunnelServer

_SERVICE = "bench.Svc"
_METHOD = f"/{_SERVICE}/Echo"


async def _echo(request: Any, context: Any) -> Any:
    return request


def _register(server: TunnelServer) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo)
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    server.add_registered_method_handlers(_SERVICE, handlers)


async def _round(server: TunnelServer, calls: int) -> float:
    lookup = server.lookup
    # CPU time of this process: the machine may be shared, the ratio is what matters.
    start = time.process_time()
    for _ in range(calls):
        handler = lookup(_METHOD, [])
        assert handler is not None
        assert handler.unary_unary is not None
        await handler.unary_unary(b"", None)  # type: ignore[arg-type]
    return (time.process_time() - start) / calls * 1e9


async def _run(calls: int, repeat: int) -> dict[str, float]:
    direct = TunnelServer()
    _register(direct)
    switched = TunnelServer()
    registrar = TunnelServer()
    _register(registrar)
    ServiceSwitch(switched, Generation(registrar, "bench"))
    results: dict[str, list[float]] = {"direct": [], "switched": []}
    await _round(direct, calls // 10)  # warm up
    await _round(switched, calls // 10)
    for _ in range(repeat):
        results["direct"].append(await _round(direct, calls))
        results["switched"].append(await _round(switched, calls))
    direct_ns = statistics.median(results["direct"])
    switched_ns = statistics.median(results["switched"])
    return {
        "direct_ns_per_call": round(direct_ns, 1),
        "switched_ns_per_call": round(switched_ns, 1),
        "ratio": round(switched_ns / direct_ns, 2),
        "added_ns_per_call": round(switched_ns - direct_ns, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.liveconfig", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each variant")
    args = parser.parse_args()
    figures = asyncio.run(_run(args.calls, args.repeat))
    print(f"{'variant':<10} {'ns/call':>10}")
    print(f"{'direct':<10} {figures['direct_ns_per_call']:>10}")
    print(f"{'switched':<10} {figures['switched_ns_per_call']:>10}")
    print(f"ratio switched/direct: {figures['ratio']} (+{figures['added_ns_per_call']} ns/call)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
