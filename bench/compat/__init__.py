"""Benchmark of the compat tool against ``buf breaking``: ``python -m bench.compat``."""

from __future__ import annotations
