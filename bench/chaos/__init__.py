"""Patient journeys under a seeded fault schedule, and the money invariants after them.

`main` runs it over real processes (the default of ``python -m bench.chaos``); `FAULTS`
names the fault kinds.
"""

from __future__ import annotations

from bench.chaos._procs import FAULTS, JOURNEY_FAULTS, Report, main, schedule

__all__ = ["FAULTS", "JOURNEY_FAULTS", "Report", "main", "schedule"]
