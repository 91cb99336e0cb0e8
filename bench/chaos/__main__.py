"""``python -m bench.chaos --orders N --seed S [--faults K,K | --no-faults K,K]``.

Launches real processes: a cloud node (``hplus cloud run``) with its control and partition
databases on PostgreSQL (made for the run, dropped after) and its presence on Redis (a key
prefix of its own), the three HIS simulators (REST, SOAP, database), three edges (``hplus
edge run``) dialing the node through TCP proxies, and the payment simulator. Drives N
patient journeys (book, pay, some cancel) through the node's patient API over gRPC with
TLS, as an app does, while a schedule drawn from the seed injects faults: HIS timeouts
after commit, tunnels dropped mid-call, edges and the node SIGKILLed and restarted,
payment notifications lost or duplicated, Redis cut, PostgreSQL connections terminated.
Then it waits for every order to settle, checks the simulators' own records and runs the
three-way reconciliation of the business date, and prints the table: orders by final
state, manual reviews with reasons, faults by kind, invariants. Exit status 1 unless every
invariant is 0.

``--in-process`` runs the older, lighter variant in one process (one REST HIS, an
in-memory payment channel, the coordinator replaced instead of the node killed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from bench.chaos._procs import FAULTS, main
from bench.chaos._world import DEFAULT_REDIS
from tools.scratchdb import DEFAULT_POSTGRES


def _kinds(text: str, flag: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(FAULTS)
    if unknown:
        raise SystemExit(f"{flag}: unknown fault {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return names


async def _until_signalled(**kwargs: Any) -> Any:
    """``main``, cancelled by SIGTERM as by SIGINT, so the processes and databases go too."""
    task = asyncio.ensure_future(main(**kwargs))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def cli() -> None:
    """Parse the options, run, print the table; exit 1 when an invariant is violated."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=40, help="patient journeys (default 40)")
    parser.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    parser.add_argument("--concurrency", type=int, default=6, help="journeys at once (default 6)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"fault kinds to inject (default all: {', '.join(FAULTS)})",
    )
    parser.add_argument("--no-faults", default="", help="fault kinds not to inject")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.5,
        help="fault intensity: about 1.1 faults per journey at 1.0 (default 0.5)",
    )
    parser.add_argument(
        "--settle", type=float, default=300.0, help="seconds to wait for orders to settle"
    )
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES, help="admin URL (CREATE DATABASE)"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="start no journey after this many seconds (the table says how many ran)",
    )
    parser.add_argument(
        "--keep", type=Path, help="state directory to keep (logs), default a temporary one"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="the one-process variant (REST HIS only)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.in_process:
        from bench.chaos._run import run

        report = run(orders=args.orders, seed=args.seed, concurrency=args.concurrency)
        sys.exit(0 if report.ok else 1)
    kinds = _kinds(args.faults, "--faults") - _kinds(args.no_faults, "--no-faults")
    if not 0 <= args.rate <= 5:
        raise SystemExit("--rate: must be within [0, 5]")
    result = asyncio.run(
        _until_signalled(
            orders=args.orders,
            seed=args.seed,
            concurrency=args.concurrency,
            kinds=kinds,
            rate=args.rate,
            settle_seconds=args.settle,
            postgres_url=args.postgres_url,
            redis_url=args.redis_url,
            keep=args.keep.resolve() if args.keep else None,
            progress=True,
            max_seconds=args.max_seconds,
        )
    )
    for line in result.lines():
        print(line)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    cli()
