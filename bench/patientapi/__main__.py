"""``python -m bench.patientapi [--quick] [--hospitals N] [--calls N]``: ListSlots two ways.

One run, side by side: ``PatientApiService/ListSlots`` served by a real node from its read
store, and the hospital's ``DirectoryService/ListSlots`` forwarded by the same node through
the tunnel to a fleet-sim edge. Both over TLS on loopback, at concurrency 64. Prints a
table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.patientapi._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.patientapi", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 hospitals, 3,000 calls a path")
    parser.add_argument("--hospitals", type=int, help="simulated hospitals (default 20)")
    parser.add_argument("--calls", type=int, help="calls per path (default 15000)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument(
        "--cache-seconds",
        type=float,
        default=None,
        help="the node's [patient_api] read_cache_seconds (default: the node's default; "
        "0 measures the store without the cache)",
    )
    args = parser.parse_args()
    asyncio.run(
        run(
            hospitals=args.hospitals or (5 if args.quick else 20),
            calls=args.calls or (3000 if args.quick else 15000),
            concurrency=args.concurrency,
            cache_seconds=args.cache_seconds,
        )
    )


if __name__ == "__main__":
    main()
