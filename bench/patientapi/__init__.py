"""Benchmark of the patient API's ListSlots against the same read through the tunnel."""
