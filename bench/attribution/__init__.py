"""Attribution accuracy over a labelled set of really injected faults.

``python -m bench.attribution`` (see ``_run``).
"""

from __future__ import annotations

from bench.attribution._run import HOLD_OUT, KINDS, OWNERS, Report, run

__all__ = ["HOLD_OUT", "KINDS", "OWNERS", "Report", "run"]
