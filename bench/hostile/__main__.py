"""``python -m bench.hostile [--seconds S]``: run the hostile-peer benchmark."""

from __future__ import annotations

import argparse

from bench.hostile._driver import main_driver


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="how long each attack may run (default 5)"
    )
    args = parser.parse_args()
    main_driver(seconds=args.seconds)


if __name__ == "__main__":
    main()
