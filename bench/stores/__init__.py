"""Benchmark of the edge's start-time store checks: ``python -m bench.stores``."""

from __future__ import annotations
