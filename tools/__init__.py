"""The ``hplus`` command line, simulators and build helpers (depends on everything else)."""

from __future__ import annotations
