"""Keeps presence in step with this node's tunnels and records refused duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from cloud.presence import Presence, PresenceUnavailable, RefusedTunnel, TunnelRecord
from mesh.observability import counter, gauge
from mesh.tunnel import EdgeConflict, Session, TunnelGateway

__all__ = ["PresenceSync"]

log = logging.getLogger(__name__)

_BEATS = counter(
    "hplus_presence_heartbeats_total",
    "Heartbeats of a node's tunnel presence, by outcome",
    ["node", "outcome"],
)
_LAST_BEAT = gauge(
    "hplus_presence_last_heartbeat_timestamp_seconds",
    "When a node last published its tunnels to presence",
    ["node"],
)


class PresenceSync:
    """Publishes this node's tunnels to presence and refreshes them by heartbeat.

    (Replacing a reconnecting edge's stale session is the gateway's own job.)

    Wire `on_session` and `on_conflict` into ``TunnelGateway(on_session=...,
    on_conflict=...)``. If presence (Redis) is down, local tunnels keep serving; the
    heartbeat republishes everything once it is back.

    Args:
        presence: where tunnels are published.
        node_id: this node's id.
        node_address: ``HOST:PORT`` of this node's internal endpoint.
        interval: seconds between heartbeats (a third of the presence TTL).
    """

    def __init__(
        self, presence: Presence, *, node_id: str, node_address: str, interval: float
    ) -> None:
        self._presence = presence
        self._node_id = node_id
        self.node_address = node_address
        self._interval = interval
        self._gateway: TunnelGateway | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.heartbeats = 0
        """Heartbeats completed (tests and metrics)."""

    def attach(self, gateway: TunnelGateway) -> None:
        """Tell the sync which gateway's sessions to publish."""
        self._gateway = gateway

    def record(self, session: Session) -> TunnelRecord:
        """The presence record of one local session."""
        hello, welcome = session.hello, session.welcome
        now = dt.datetime.now(dt.UTC)
        origin = None if self._gateway is None else self._gateway.origin(session)
        return TunnelRecord(
            hospital_id=hello.hospital_id,
            session_id=welcome.session_id,
            node_id=self._node_id,
            node_address=self.node_address,
            epoch=welcome.epoch,
            edge_id=hello.edge_id,
            edge_version=hello.software_version,
            contract_release=hello.contract_release,
            connection_index=hello.connection_index,
            revision=session.revision,
            connected_since=dt.datetime.fromtimestamp(session.created, dt.UTC),
            last_seen=now,
            rtt_ms=None if session.rtt is None else session.rtt * 1000.0,
            in_flight=session.active_streams,
            warnings=tuple(welcome.warnings),
            credential_id=origin.credential_id if origin else "",
            peer=origin.peer if origin else "",
        )

    def on_session(self, session: Session, ended: bool) -> None:
        """Gateway callback: a session became ready (``ended`` False) or ended (True)."""
        if ended:
            self._spawn(
                self._presence.remove(session.hello.hospital_id, session.welcome.session_id)
            )
            return
        self._spawn(self._presence.put(self.record(session)))

    def on_conflict(self, conflict: EdgeConflict) -> None:
        """Gateway callback: count a refused duplicate edge id for operators."""
        claim, holder = conflict.claim, conflict.holder
        refused = RefusedTunnel(
            hospital_id=claim.hospital_id,
            edge_id=claim.edge_id,
            connection_index=claim.connection_index,
            credential_id=claim.credential_id,
            peer=claim.peer,
            node_id=conflict.node_id,
            at=conflict.at,
            holder_session_id=holder.session_id,
            holder_node_id=holder.node_id,
            holder_peer=holder.peer,
            holder_since=holder.since,
        )
        self._spawn(self._presence.record_refusal(refused))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except PresenceUnavailable as err:
                log.warning("presence update deferred to the next heartbeat: %s", err)

        task = asyncio.get_running_loop().create_task(guarded(), name="presence-update")
        self._pending.add(task)
        task.add_done_callback(self._update_done)

    def _update_done(self, task: asyncio.Task[None]) -> None:
        # The task is ours until here: its failure is reported now, once, rather than left
        # for the garbage collector ("Task exception was never retrieved").
        self._pending.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("presence update failed", exc_info=err)

    async def beat(self) -> None:
        """Republish every local session once (updates RTT, in-flight calls, last seen)."""
        if self._gateway is None:
            return
        gateway = self._gateway
        for session in gateway.sessions():
            if session.ready.is_set() and not session.is_closed:
                await self._presence.put(self.record(session))
                if gateway.origin(session) is None:
                    # It ended while we wrote: its removal may have landed first, and a
                    # stale record would make a revocation look unconfirmed for a TTL.
                    hospital, session_id = session.hello.hospital_id, session.welcome.session_id
                    await self._presence.remove(hospital, session_id)
        self.heartbeats += 1

    async def run(self) -> None:
        """Heartbeat until `shutdown`."""
        while not self._stop.is_set():
            try:
                await self.beat()
                _BEATS.labels(self._node_id, "ok").inc()
                _LAST_BEAT.labels(self._node_id).set_to_current_time()
            except PresenceUnavailable as err:
                _BEATS.labels(self._node_id, "failed").inc()
                log.warning("presence heartbeat failed, retrying: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)

    async def shutdown(self) -> None:
        """Stop the heartbeat and wait for pending updates."""
        self._stop.set()
        if self._heartbeat is not None:
            await self._heartbeat
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def __aenter__(self) -> PresenceSync:
        self._heartbeat = asyncio.get_running_loop().create_task(self.run(), name="heartbeat")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
