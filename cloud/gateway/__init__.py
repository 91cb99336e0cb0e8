"""The gateway role of a cloud node: tunnels in, calls routed to hospitals across nodes."""

from __future__ import annotations

from cloud.gateway._cluster import PresenceCluster
from cloud.gateway._forward import ForwardHandler
from cloud.gateway._revocation import RevocationReport, RevocationWatcher
from cloud.gateway._router import FORWARDED_KEY, ROUTE_KEY, HospitalRouter, HospitalUnavailable
from cloud.gateway._secret import INTERNAL_AUTH_KEY, InternalAuthInterceptor, load_or_create_secret
from cloud.gateway._sync import PresenceSync

__all__ = [
    "FORWARDED_KEY",
    "INTERNAL_AUTH_KEY",
    "ROUTE_KEY",
    "ForwardHandler",
    "HospitalRouter",
    "HospitalUnavailable",
    "InternalAuthInterceptor",
    "PresenceCluster",
    "PresenceSync",
    "RevocationReport",
    "RevocationWatcher",
    "load_or_create_secret",
]
