"""``python -m bench.accounts [--seconds S] [--concurrency N] [--rounds R]``.

Sign-ins per second (StartSignIn + CompleteSignIn) and an authenticated no-op call per
second through one server over TLS, with the authentication's cost against the same call
without it, side by side in one run. Prints a table and, on the last line, the figures as
JSON. ``--postgres postgresql://postgres@127.0.0.1:5432/test`` puts the partitions in
PostgreSQL databases made for the run (dropped after it) instead of SQLite files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench.accounts._run import run, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accounts", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="1 s per figure, 1 round")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server's URL: partitions in databases made there for the run",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--databases", help=argparse.SUPPRESS)  # the child's PostgreSQL URLs
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve is not None:
        serve(args.serve, args.databases)
        return
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    run(
        seconds=args.seconds,
        concurrency=args.concurrency,
        rounds=args.rounds,
        postgres=args.postgres,
    )


if __name__ == "__main__":
    main()
