"""Live configuration: a profile applied to a running edge, versioned, health-gated.

:class:`LiveConfig` swaps the profile-dependent parts the composition root builds
(:class:`ProfileParts`) behind a :class:`ServiceSwitch` that routes each call to the parts
active when it arrived; :class:`ConfigStore` keeps the history of profiles and the results
of ApplyConfig / RollbackConfig by idempotency key under the edge's data directory.
"""

from __future__ import annotations

from frontend_server.liveconfig._live import (
    ApplyOutcome,
    HealthFailure,
    LiveConfig,
    ProfileParts,
    restart_violations,
)
from frontend_server.liveconfig._store import ConfigStore, RevisionSource, StoredRevision
from frontend_server.liveconfig._switch import Generation, ServiceSwitch

__all__ = [
    "ApplyOutcome",
    "ConfigStore",
    "Generation",
    "HealthFailure",
    "LiveConfig",
    "ProfileParts",
    "RevisionSource",
    "ServiceSwitch",
    "StoredRevision",
    "restart_violations",
]
