"""The front-end server that runs inside each hospital.

It dials out to the cloud, serves the hospital services through the tunnel over that
hospital's HIS, and queues slow work. The package root imports nothing, so importing one
part loads that part and what it needs; the parts, each with its own ``__all__``:

* :mod:`frontend_server.admin`: the edge's admin servicer;
* :mod:`frontend_server.profile`: the hospital's validated configuration profile;
* :mod:`frontend_server.rules`: the appointment rule engine;
* :mod:`frontend_server.ledger`: the idempotency ledger of HIS writes;
* :mod:`frontend_server.tasks`: the durable, rate-limited pending-task queue;
* :mod:`frontend_server.adapters`: one HIS adapter per vendor dialect;
* :mod:`frontend_server.services`: the ``hplus.hospital.v1`` servicers;
* :mod:`frontend_server.dialer`: the tunnels to the cloud;
* :mod:`frontend_server.sqlite`: the SQLite engine the ledger and the queue share;
* :mod:`frontend_server.directory`: the directory mirror the change feed is served from;
* :mod:`frontend_server.app`: :class:`~frontend_server.app.EdgeApp`, the edge's composition root.
"""

from __future__ import annotations

__all__: list[str] = []
