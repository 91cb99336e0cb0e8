"""``python -m bench.attribution [--quick] [--seed N] [--per-kind N] [--keep DIR] [--json]``,
or ``--overhead``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench.attribution import run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attribution",
        description="Inject real faults (HIS per dialect, hospital network, edge, tunnel, "
        "hostile peer, payment channel, cloud store, bad input and credentials) against a "
        "node, three edges and their simulators; attribute each failure from what the node "
        "recorded; print accuracy overall, per owner, on the tuning and held-out sets, the "
        "confusion table and every misattributed case.",
    )
    parser.add_argument("--quick", action="store_true", help="1 case per kind and set (CI)")
    parser.add_argument("--per-kind", type=int, default=7, help="cases per kind and set")
    parser.add_argument("--seed", type=int, default=1, help="seed of the tuning set")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="instead: what the recorder costs a call that succeeds (with/without, interleaved)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the platform's data in DIR (an empty or new directory): then "
        "hplus cloud errors --data-dir DIR/cloud shows what the node recorded",
    )
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep: {args.keep} is not empty")
    # Faults make the parts log errors by design (the node's INTERNAL with its correlation
    # id, the edge's lost HIS): the report is the output.
    logging.basicConfig(level=logging.CRITICAL)
    if args.overhead:
        from bench.attribution._overhead import measure

        found = measure()
        print(
            "successful unary call, median of 20 interleaved rounds of 500: "
            f"{found['plain_us_per_call']} us without interceptors, "
            f"{found['pass_through_us_per_call']} us with a pass-through interceptor, "
            f"{found['recorded_us_per_call']} us with the recorder's "
            f"(ratio {found['ratio_to_pass_through']} to the pass-through)"
        )
        print(json.dumps(found))
        return 0
    report = run(
        seed=args.seed,
        per_kind=1 if args.quick else args.per_kind,
        as_json=args.json,
        keep=args.keep,
    )
    return 0 if report.all else 1


if __name__ == "__main__":
    raise SystemExit(main())
