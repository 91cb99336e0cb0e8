"""``python -m tools.pay_sim``: run the simulated payment channel."""

from __future__ import annotations

import sys

from tools.pay_sim._cli import main

if __name__ == "__main__":
    sys.exit(main())
