"""``python -m bench.reconcile [--payments N] [--hospitals H] [--rounds R]``: classification cost.

One synthetic business day: N platform payments over H hospitals, the channel's statement
and every hospital's ledger, with about 1% hand-made discrepancies of each class. Times
`cloud.reconcile.compare` against a baseline run side by side in the same process, round by
round: the plainest three-way join of the same data (dicts by out-trade number and
transaction id, amounts compared, nothing classified). Prints the medians, the ratio, and
last one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Sequence

from cloud.payments import CST, StatementRow
from cloud.reconcile import (
    HospitalEntry,
    HospitalLedger,
    PlatformPayment,
    PlatformState,
    compare,
)

DAY = dt.date(2026, 12, 5)
AT = dt.datetime(2026, 12, 5, 9, 0, tzinfo=CST)


def day(
    n: int, hospitals: int
) -> tuple[list[PlatformPayment], list[StatementRow], dict[str, HospitalLedger]]:
    """A day with ~1% of each discrepancy class."""
    platform: list[PlatformPayment] = []
    statement: list[StatementRow] = []
    entries: dict[str, list[HospitalEntry]] = {f"h{h:04d}": [] for h in range(hospitals)}
    for i in range(n):
        h, no, tx, amount = f"h{i % hospitals:04d}", f"T{i:012d}", f"4200{i:012d}", 900 + i % 97
        kind = i % 100
        state = PlatformState.UNKNOWN if kind == 4 else PlatformState.CONFIRMED
        if kind != 2:  # 2: missing at platform
            platform.append(
                PlatformPayment(
                    f"o{i}", h, no, amount + (kind == 3), state, transaction_id=tx, paid_at=AT
                )
            )
        if kind != 1:  # 1: missing at channel
            statement.append(StatementRow(DAY, "payment", no, tx, amount, occurred_at=AT))
        if kind != 0:  # 0: missing at hospital
            entries[h].append(HospitalEntry(h, "payment", f"R{i}", tx, amount))
    ledgers = {
        h: HospitalLedger(h, tuple(e), read=True, day_closed=True) for h, e in entries.items()
    }
    return platform, statement, ledgers


def baseline(
    platform: Sequence[PlatformPayment],
    statement: Sequence[StatementRow],
    ledgers: dict[str, HospitalLedger],
) -> int:
    """The plainest join: how many payments do not agree in all three places."""
    channel = {r.out_trade_no: r.amount_fen for r in statement}
    hospital = {e.transaction_id: e.cash_fen for lg in ledgers.values() for e in lg.entries}
    bad = 0
    for p in platform:
        if (
            channel.get(p.out_trade_no) != p.amount_fen
            or hospital.get(p.transaction_id) != p.amount_fen
        ):
            bad += 1
    known = {p.out_trade_no for p in platform}
    return bad + sum(1 for r in statement if r.out_trade_no not in known)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--hospitals", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    platform, statement, ledgers = day(args.payments, args.hospitals)
    ours: list[float] = []
    base: list[float] = []
    found = 0
    for _ in range(args.rounds):
        t = time.perf_counter()
        found = len(compare(DAY, platform, statement, ledgers))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        baseline(platform, statement, ledgers)
        base.append(time.perf_counter() - t)
    ours_s, base_s = statistics.median(ours), statistics.median(base)
    print(f"payments {args.payments:,}, hospitals {args.hospitals:,}, discrepancies {found:,}")
    print(f"compare   median {ours_s:8.3f} s   ({args.payments / ours_s:,.0f} payments/s)")
    print(f"baseline  median {base_s:8.3f} s")
    print(f"ratio     {ours_s / base_s:.2f}x")
    print(
        json.dumps(
            {
                "bench": "reconcile",
                "payments": args.payments,
                "hospitals": args.hospitals,
                "discrepancies": found,
                "compare_s": round(ours_s, 4),
                "baseline_s": round(base_s, 4),
                "ratio": round(ours_s / base_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
