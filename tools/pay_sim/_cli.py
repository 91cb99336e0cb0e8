"""Command line: run the payment simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh.net import parse_hostport
from tools.pay_sim._sim import PaySim

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.pay_sim",
        description="Run the simulated payment channel (WeChat-Pay-v3-like merchant API).",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default 127.0.0.1:0"
    )
    parser.add_argument(
        "--state", type=Path, default=Path("pay_sim.db"), help="SQLite file (default pay_sim.db)"
    )
    parser.add_argument("--merchant-id", default="1900000001")
    parser.add_argument("--app-id", default="wxhplus0000000001")
    parser.add_argument(
        "--write-keys",
        type=Path,
        metavar="DIR",
        help="write merchant.key (0600) and platform_public.pem there for the node's config",
    )
    parser.add_argument(
        "--notify-ca", type=Path, help="CA file to trust for https notify URLs (the node's CA)"
    )
    return parser


async def _run(sim: PaySim, keys: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        if keys is not None:
            sim.write_keys(keys)
        print(
            f"pay_sim merchant={sim.merchant_id} serial={sim.platform_serial} "
            f"ready at {sim.base_url}",
            flush=True,
        )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the simulator until SIGINT or SIGTERM; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        host, port = parse_hostport(args.listen)
    except ValueError as err:
        print(f"error: --listen: {err}", file=sys.stderr)
        return 2
    sim = PaySim(
        path=args.state,
        host=host,
        port=port,
        merchant_id=args.merchant_id,
        app_id=args.app_id,
        notify_ca=args.notify_ca,
    )
    try:
        asyncio.run(_run(sim, args.write_keys))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
