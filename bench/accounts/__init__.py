"""Benchmark of sign-in and of the per-call authentication of the patient API."""
