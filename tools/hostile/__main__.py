"""``python -m tools.hostile ATTACK``: run one attack against a node, or as a gateway for an edge.

Against a node (we are a misbehaving edge)::

    python -m tools.hostile ping-flood --target localhost:50051 --credential h.cred --ca ca.pem

As a gateway (a real edge dials us; with ``--tls-dir`` holding ``ca.pem``, ``server.pem`` and
``server-key.pem``, as ``hplus cloud run`` makes them)::

    python -m tools.hostile drain-storm --listen 127.0.0.1:0 --tls-dir var/tls

Output is JSON, one object a line: ``{"event": "listening", "port": N}`` (gateway),
``{"event": "connected"}``, ``{"event": "attacking"}`` (handshake done), then the result (an
`AttackResult`) on the last line. With ``--wait-go`` the tool holds each new connection until
a line arrives on its standard input (so a harness can measure a baseline first).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mesh.tls import TlsFiles
from tools.hostile._attacks import ATTACKS, AttackResult, Options, run_attack
from tools.hostile._peer import HostileGateway, Peer, dial


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event, sort_keys=True), flush=True)


async def _wait_go(enabled: bool) -> None:
    if enabled:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _against_node(args: argparse.Namespace, opts: Options) -> dict[str, Any]:
    attack = ATTACKS[args.attack]
    if "edge" not in attack.roles:
        raise SystemExit(f"{attack.name} is run as a gateway (--listen), not against a node")
    ca = args.ca.read_bytes() if args.ca else None
    credential = args.credential.read_text().strip()
    peer, channel = await dial(args.target, credential=credential, ca=ca)
    try:
        await asyncio.wait_for(channel.channel_ready(), 10)
        _emit({"event": "connected"})
        await _wait_go(args.wait_go)
        result = await run_attack(
            peer, attack, opts, on_attacking=lambda: _emit({"event": "attacking"})
        )
        return result.as_dict()
    finally:
        await peer.stop()
        await channel.close()


async def _as_gateway(args: argparse.Namespace, opts: Options) -> dict[str, Any]:
    attack = ATTACKS[args.attack]
    if "gateway" not in attack.roles:
        raise SystemExit(f"{attack.name} is run against a node (--target), not as a gateway")
    results: list[AttackResult] = []
    first = asyncio.Event()
    done = asyncio.Event()
    storm = attack.name == "drain-storm"

    async def on_edge(peer: Peer) -> None:
        if not storm:
            if results or first.is_set():
                return  # only the first connection is attacked
            first.set()
        _emit({"event": "connected"})
        try:
            await _wait_go(args.wait_go and not storm)
            results.append(
                await run_attack(
                    peer, attack, opts, on_attacking=lambda: _emit({"event": "attacking"})
                )
            )
        except Exception:  # grpc would swallow it: say what broke, and end the run
            traceback.print_exc()
            raise
        finally:
            done.set()

    tls = None
    if args.tls_dir is not None:
        tls = TlsFiles(
            ca_cert=args.tls_dir / "ca.pem",
            server_cert=args.tls_dir / "server.pem",
            server_key=args.tls_dir / "server-key.pem",
        )
    gateway = HostileGateway(on_edge, tls=tls)
    port = await gateway.start(args.listen)
    _emit({"event": "listening", "port": port})
    try:
        if storm:
            # Count how often the edge comes back in the window (it must back off).
            await asyncio.wait_for(gateway.connected.wait(), 60)
            await asyncio.sleep(opts.seconds)
            times = gateway.connected_at
            gaps = [b - a for a, b in itertools.pairwise(times)]
            return {
                "attack": attack.name,
                "role": "gateway",
                "closed": True,
                "code": "UNAVAILABLE",
                "details": "drained",
                "seconds_to_close": None,
                "frames_sent": 0,
                "bytes_sent": 0,
                "notes": {
                    "connections": gateway.connections,
                    "seconds": opts.seconds,
                    "gaps": [round(g, 3) for g in gaps],
                },
            }
        await done.wait()
        if not results:
            raise SystemExit("the attack failed (see the traceback above)")
        return results[0].as_dict()
    finally:
        await gateway.stop()


def main() -> None:
    """Parses the command line and runs the attack."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.hostile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("attack", nargs="?", choices=sorted(ATTACKS), help="the attack class")
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="HOST:PORT", help="a node's public endpoint")
    where.add_argument("--listen", metavar="HOST:PORT", help="serve as a gateway here")
    parser.add_argument("--credential", type=Path, help="file with the hospital credential")
    parser.add_argument("--ca", type=Path, help="CA certificate of the node (PEM)")
    parser.add_argument("--hospital", default="hostile", help="hospital id in the hello")
    parser.add_argument("--tls-dir", type=Path, help="gateway: ca.pem, server.pem, server-key.pem")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to attack")
    parser.add_argument("--close-within", type=float, default=15.0, help="wait for the close")
    parser.add_argument("--ping-interval", type=float, default=0.5, help="gateway: in welcome")
    parser.add_argument("--reconnect-after", type=float, default=0.0, help="drain-storm hint")
    parser.add_argument("--wait-go", action="store_true", help="hold until a line on stdin")
    args = parser.parse_args()
    if args.list or args.attack is None:
        for name, attack in sorted(ATTACKS.items()):
            print(f"{name:<18} {'/'.join(attack.roles):<13} {attack.summary}")
        return
    opts = Options(
        hospital=args.hospital,
        seconds=args.seconds,
        close_within=args.close_within,
        ping_interval=args.ping_interval,
        reconnect_after=args.reconnect_after,
    )
    started = time.monotonic()
    if args.target:
        if args.credential is None:
            parser.error("--target needs --credential")
        result = asyncio.run(_against_node(args, opts))
    elif args.listen:
        result = asyncio.run(_as_gateway(args, opts))
    else:
        parser.error("give --target HOST:PORT (a node) or --listen HOST:PORT (as a gateway)")
    result["wall_seconds"] = round(time.monotonic() - started, 3)
    _emit(result)


if __name__ == "__main__":
    main()
