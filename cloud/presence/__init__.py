"""Tunnel presence: which gateway node holds which hospital's tunnels.

One node keeps it in process; many nodes share it through Redis, with a TTL that heartbeats
refresh, so a node that dies stops being named within one TTL.
"""

from __future__ import annotations

from cloud.presence._memory import InProcessPresence
from cloud.presence._model import (
    EdgeConflicts,
    Presence,
    PresenceUnavailable,
    RefusedTunnel,
    TunnelRecord,
)
from cloud.presence._redis import RedisPresence

__all__ = [
    "EdgeConflicts",
    "InProcessPresence",
    "Presence",
    "PresenceUnavailable",
    "RedisPresence",
    "RefusedTunnel",
    "TunnelRecord",
]
