"""Benchmark: edge package deltas vs full packages."""
