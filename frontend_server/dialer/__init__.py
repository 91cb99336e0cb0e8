"""The edge's dialer: holds tunnels to the cloud, reconnecting with backoff and jitter."""

from __future__ import annotations

from frontend_server.dialer._backoff import Backoff
from frontend_server.dialer._dialer import Dialer, DialerConfig, SlotState, dial

__all__ = ["Backoff", "Dialer", "DialerConfig", "SlotState", "dial"]
