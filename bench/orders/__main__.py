"""``python -m bench.orders [--journeys N] [--seconds S] [--concurrency C] [--postgres URL]``.

BookAppointment + PayOrder through the patient API's order coordinator (the order written
before each hospital write, the payment's notification, the hospital's confirmation) against
the same hospital calls (HoldSlot, BookAppointment) made directly through the same tunnel,
side by side in one run, over a real node, edge and simulated HIS: p50/p95 latency of one
journey at a time and their ratio, and journeys per second with C in flight. Prints a table
and, on the last line, the figures as JSON. ``--quick``: 15 journeys, 3 s of throughput.
"""

from __future__ import annotations

import argparse
import logging

from bench.orders._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__)
    parser.add_argument("--journeys", type=int, default=60, help="journeys of each kind, timed")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput")
    parser.add_argument("--concurrency", type=int, default=8, help="journeys in flight")
    parser.add_argument("--patients", type=int, default=20, help="patients (10 per account)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server's admin URL: the node's partitions in databases made there "
        "for the run (default: the node's SQLite files)",
    )
    parser.add_argument(
        "--his-latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="every HIS request answers MS later, on both paths (default 0: the simulators "
        "answer at once, so the platform's own cost is all the difference)",
    )
    parser.add_argument("--quick", action="store_true", help="15 journeys, 3 s throughput")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.journeys, args.seconds = 15, 3.0
    run(
        journeys=args.journeys,
        seconds=args.seconds,
        concurrency=args.concurrency,
        patients=args.patients,
        postgres=args.postgres,
        his_latency=args.his_latency,
    )


if __name__ == "__main__":
    main()
