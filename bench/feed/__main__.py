"""``python -m bench.feed [--dialect D …] [--no-baseline]``: the change feed against List*.

Prints a table (pages, entities, KiB and seconds per figure, and the ratio to the List*
path) and, on the last line, the same figures as one JSON object.
"""

from __future__ import annotations

import argparse

from bench.feed._run import EXAMPLES, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    parser.add_argument(
        "--dialect",
        action="append",
        choices=sorted(EXAMPLES),
        help="dialects to measure (repeatable; default all three)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the List* baseline (about a minute: one paced ListSlots per schedule)",
    )
    args = parser.parse_args()
    run(dialects=args.dialect or ["rest", "soap", "db"], baseline=not args.no_baseline)


if __name__ == "__main__":
    main()
