"""Benchmark of tracing + metrics: the same calls with and without, alternating."""
