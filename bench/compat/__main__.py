"""``python -m bench.compat [--quick]``: our diff vs ``buf breaking`` on a generated corpus.

Prints a table (wall time, peak memory, ratios, window-gate time) and, on the last line, the
same figures as one JSON object.
"""

from __future__ import annotations

import argparse

from bench.compat._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compat", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small corpus (100 files) instead of 2,000 files"
    )
    args = parser.parse_args()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
