"""Shared runtime of hplus: the tunnel engine, TLS material, config helpers.

Used by both ``cloud`` and ``frontend_server``; imports nothing of ours but ``gen``.
"""

from __future__ import annotations
