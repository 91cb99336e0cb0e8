"""Benchmarks: each subpackage runs as ``python -m bench.<name>`` and prints ratios against a
baseline measured in the same run."""

from __future__ import annotations
