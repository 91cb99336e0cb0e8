"""Hostile-peer benchmark: every attack of ``tools.hostile`` against a real node and edge."""

from __future__ import annotations
