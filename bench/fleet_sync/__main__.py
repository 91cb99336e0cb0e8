"""``python -m bench.fleet_sync [--quick] [--hospitals 2000]``: a node syncing a whole fleet.

A real node (``hplus cloud run``, read store in a fresh PostgreSQL database) and the fleet
simulator with N edges (5 doctors, 7 days each) changing all the time: the full sync's
time and rows/s, the incremental sync lag (p50/p99 of how old each hospital's slots are
in the store) while every hospital changes, and the node's RSS with N tunnels and the sync
running. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.fleet_sync._run import DEFAULT_URL, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sync", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50 hospitals, 20 s of changes")
    parser.add_argument("--hospitals", type=int, help="simulated hospitals (default 2000)")
    parser.add_argument(
        "--observe", type=float, help="seconds of incremental sync measured (default 60)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds after the full sync before the lag is measured (default 30)",
    )
    parser.add_argument(
        "--change-rate",
        type=float,
        default=0.2,
        help="directory changes per hospital per second (default 0.2: every hospital "
        "changes every ~5 s)",
    )
    parser.add_argument(
        "--slot-interval",
        type=float,
        default=5.0,
        help="the node's [sync] slot_interval for the run (default 5 s; the node's own "
        "default is 30 s)",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("HPLUS_BENCH_POSTGRES_URL", DEFAULT_URL),
        help="PostgreSQL server URL (a fresh database is made and dropped)",
    )
    args = parser.parse_args()
    asyncio.run(
        run(
            hospitals=args.hospitals or (50 if args.quick else 2000),
            observe=args.observe or (20.0 if args.quick else 60.0),
            settle=args.settle,
            change_rate=args.change_rate,
            slot_interval=args.slot_interval,
            url=args.database,
        )
    )


if __name__ == "__main__":
    main()
