"""``python -m bench.chaos --orders N --seed S [--concurrency C]``.

Drives N patient journeys (book, pay, some cancel) through the order API of a real node with
a real edge and a simulated HIS, injecting faults on a schedule drawn from the seed: HIS
timeouts after commit (hold, booking, cancellation), notifications lost or duplicated, the
channel's refund answer lost, the node's coordinator stopped mid-work and replaced. Then it
waits for every order to settle and prints the final states, the manual reviews with their
reasons, and the invariants (duplicated bookings at the HIS, bookings without a confirmed
order, charges without an order, money kept without a booking or refund, refunds of
bookings the hospital kept), each of which must be 0: exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.chaos._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--orders", type=int, default=40, help="patient journeys")
    parser.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    parser.add_argument("--concurrency", type=int, default=4, help="journeys at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    report = run(orders=args.orders, seed=args.seed, concurrency=args.concurrency)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
