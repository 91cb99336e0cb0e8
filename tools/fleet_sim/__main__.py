"""``python -m tools.fleet_sim``: see :mod:`tools.fleet_sim`."""

from __future__ import annotations

from tools.fleet_sim import main

raise SystemExit(main())
