"""Presence updates run in tasks the sync owns: a failure is reported once, by us."""

from __future__ import annotations

import gc
import logging

import pytest

from cloud.gateway import PresenceSync
from cloud.presence import InProcessPresence, TunnelRecord
from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel import Role, Session, memory_transport_pair


class BrokenPresence(InProcessPresence):
    """A presence store with a bug (not an outage: that is PresenceUnavailable)."""

    async def put(self, record: TunnelRecord) -> None:
        raise RuntimeError("presence bug")


async def test_a_failed_update_is_logged_once_and_never_left_to_the_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    sync = PresenceSync(BrokenPresence(), node_id="n1", node_address="127.0.0.1:1", interval=60)
    _, cloud_end = memory_transport_pair()
    session = Session(cloud_end, role=Role.CLOUD)
    session.hello.CopyFrom(tunnel_pb2.Hello(hospital_id="h-1", edge_id="e"))
    async with sync:
        sync.on_session(session, False)
    gc.collect()
    failures = [r for r in caplog.records if r.getMessage() == "presence update failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "presence bug" in str(failures[0].exc_info[1])
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
