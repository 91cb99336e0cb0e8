"""``python -m bench.readstore [--quick] [--hospitals N]``: read store sync and reads.

Full sync of N synthetic hospitals into PostgreSQL against plain INSERTs of the same rows,
an incremental round with every hospital changing, and ListSlots at concurrency 64 against
the same SELECT without our query layer. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.readstore._run import DEFAULT_URL, SOURCES, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.readstore", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 hospitals, 2,000 calls")
    parser.add_argument("--hospitals", type=int, help="hospitals to sync (default 2000)")
    parser.add_argument("--calls", type=int, help="ListSlots calls (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="ListSlots concurrency")
    parser.add_argument("--source", choices=sorted(SOURCES), default="synthetic")
    parser.add_argument(
        "--database",
        default=os.environ.get("HPLUS_BENCH_POSTGRES_URL", DEFAULT_URL),
        help="PostgreSQL URL (a fresh schema is made and dropped)",
    )
    args = parser.parse_args()
    hospitals = args.hospitals or (100 if args.quick else 2000)
    calls = args.calls or (2000 if args.quick else 20000)
    asyncio.run(
        run(
            hospitals=hospitals,
            url=args.database,
            source=args.source,
            calls=calls,
            concurrency=args.concurrency,
        )
    )


if __name__ == "__main__":
    main()
