"""Benchmark of the public read store and its sync."""
