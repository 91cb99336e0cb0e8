"""Benchmark of the read store's sync with a fleet of simulated hospitals."""
