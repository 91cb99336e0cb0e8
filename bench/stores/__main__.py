"""``python -m bench.stores [--entries N] [--repeat N]``: what the start checks cost.

Builds a ledger of N entries (default 100,000) and a task store, then opens them as the
edge did before the checks (engine, ``create_all``, crash recovery) and as it does now
(``DataDir.open``: modes, identity record, ``integrity_check``, stamps, then the same),
interleaved in one run. Prints a table and, on the last line, the figures as JSON.
"""

from __future__ import annotations

import argparse
import logging

from bench.stores._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000, help="ledger entries")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each variant")
    args = parser.parse_args()
    # The adoption of the built stores logs its warnings; the table is the output.
    logging.basicConfig(level=logging.ERROR)
    run(entries=args.entries, repeat=args.repeat)


if __name__ == "__main__":
    main()
