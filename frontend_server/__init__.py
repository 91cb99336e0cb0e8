"""The front-end server that runs inside each hospital.

It dials out to the cloud, serves the hospital services through the tunnel over that
hospital's HIS, and queues slow work. Its parts so far:

* :mod:`frontend_server.profile`: the hospital's validated configuration profile;
* :mod:`frontend_server.rules`: the appointment rule engine;
* :mod:`frontend_server.ledger`: the idempotency ledger of HIS writes;
* :mod:`frontend_server.tasks`: the durable, rate-limited pending-task queue;
* :mod:`frontend_server.directory`: the directory mirror the change feed is served from.
"""

from __future__ import annotations

from frontend_server.ledger import Ledger
from frontend_server.profile import Profile, load_profile
from frontend_server.rules import AppointmentRules, RuleEngine
from frontend_server.tasks import QueueConfig, TaskQueue

__all__ = [
    "AppointmentRules",
    "Ledger",
    "Profile",
    "QueueConfig",
    "RuleEngine",
    "TaskQueue",
    "load_profile",
]
