"""Benchmark of fleet upgrades: bytes per edge (delta vs full) and wave time on 50 edges."""
