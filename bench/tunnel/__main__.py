"""``python -m bench.tunnel [--quick] [--idle N]``: run the tunnel benchmark."""

from __future__ import annotations

import argparse
import asyncio

from bench.tunnel._driver import main_driver
from bench.tunnel._edge import serve_edge, serve_idle


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tunnel", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (< 60 s in total)")
    parser.add_argument("--idle", type=int, help="idle tunnels to hold (default 1000 quick, 5000)")
    parser.add_argument("--role", choices=["driver", "edge", "idle"], default="driver")
    parser.add_argument("--cloud", help="gateway address (child processes)")
    parser.add_argument("--count", type=int, default=0, help="idle tunnels (child process)")
    parser.add_argument("--first", type=int, default=1, help="first hospital index (child)")
    parser.add_argument("--hospital", default="h0", help="hospital id of the edge (child)")
    parser.add_argument("--observe", default="", help="span ring directory: observed edge (child)")
    args = parser.parse_args()
    if args.role == "edge":
        asyncio.run(serve_edge(args.cloud, hospital=args.hospital, observe=args.observe))
    elif args.role == "idle":
        asyncio.run(serve_idle(args.cloud, args.count, args.first))
    else:
        idle = args.idle if args.idle is not None else (1000 if args.quick else 5000)
        main_driver(quick=args.quick, idle=idle)


if __name__ == "__main__":
    main()
