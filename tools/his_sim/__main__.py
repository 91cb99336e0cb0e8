"""``python -m tools.his_sim``: run one simulated HIS."""

from __future__ import annotations

import sys

from tools.his_sim._cli import main

if __name__ == "__main__":
    sys.exit(main())
