"""Closing the live tunnels of revoked credentials, on every node, within seconds.

A credential is revoked in the fleet database (`cloud.fleet.CredentialStore.revoke`). Each
node then closes its tunnels of that credential when it learns of it, whichever comes
first:

* at once, from a revocation message through presence (``CloseCredentialTunnels``
  publishes one; with Redis every node receives it, in process the node itself does);
* within ``poll_interval`` (1 s), from asking the fleet database which credentials of its
  live tunnels are revoked. That is a primary-key lookup per credential, independent of
  anyone's clock, and it covers a lost message, a Redis outage and a revocation made
  while no node was asked.

Each node adds the number it closed to a per-credential count in presence, so whoever
asked can report the total, however the nodes learnt of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from types import TracebackType

import sqlalchemy.exc

from cloud.db import DatabaseError
from cloud.fleet import CredentialInfo, CredentialStore
from cloud.presence import Presence, PresenceUnavailable, TunnelRecord
from mesh.tunnel import TunnelGateway

__all__ = ["RevocationReport", "RevocationWatcher"]

log = logging.getLogger(__name__)

_FAILURES = (PresenceUnavailable, DatabaseError, sqlalchemy.exc.SQLAlchemyError, OSError)


@dataclasses.dataclass(frozen=True)
class RevocationReport:
    """What closing a revoked credential's tunnels achieved, across the cloud."""

    credential: CredentialInfo
    """The revoked credential."""
    closed_by_node: dict[str, int]
    """Tunnels closed since the revocation, per node."""
    remaining: list[TunnelRecord]
    """Tunnels of the credential still listed in presence when the wait ended."""

    @property
    def closed(self) -> int:
        """Tunnels closed by every node together."""
        return sum(self.closed_by_node.values())


class RevocationWatcher:
    """Closes this node's tunnels of revoked credentials (message, then database poll).

    Use ``async with`` (or `run` and `shutdown`).

    Args:
        gateway: this node's tunnel gateway.
        presence: carries revocation messages and per-node counts.
        credentials: the fleet's credential store.
        node_id: this node's id.
        poll_interval: seconds between checks of the live tunnels' credentials.
    """

    def __init__(
        self,
        gateway: TunnelGateway,
        presence: Presence,
        credentials: CredentialStore,
        *,
        node_id: str,
        poll_interval: float,
    ) -> None:
        self._gateway = gateway
        self._presence = presence
        self._credentials = credentials
        self._node_id = node_id
        self._interval = poll_interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    async def close_local(self, credential_id: str) -> int:
        """Close this node's tunnels of a revoked credential and add them to the count."""
        closed = self._gateway.close_credential(credential_id)
        if closed:
            log.warning(
                "closed %d tunnel(s) of revoked credential %s on node %s",
                closed,
                credential_id,
                self._node_id,
            )
            try:
                await self._presence.add_revocation_closures(credential_id, self._node_id, closed)
            except PresenceUnavailable as err:
                log.warning("could not count closed tunnels of %s: %s", credential_id, err)
        return closed

    async def close_everywhere(
        self, credential: CredentialInfo, *, wait: float
    ) -> RevocationReport:
        """Close a revoked credential's tunnels here, tell every node, wait for them.

        Args:
            credential: the credential, already revoked in the fleet database.
            wait: seconds to wait until no tunnel of it is listed on any node.

        Returns:
            How many each node closed, and what is still listed if the wait ran out.
        """
        credential_id = credential.credential_id
        await self.close_local(credential_id)
        try:
            await self._presence.publish_revocation(credential_id)
        except PresenceUnavailable as err:
            log.warning("revocation message for %s not sent: %s", credential_id, err)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        remaining = await self._listed(credential)
        # Polled: other nodes confirm by withdrawing their presence records.
        while remaining and loop.time() < deadline:
            await asyncio.sleep(0.05)
            remaining = await self._listed(credential)
        try:
            closed = await self._presence.revocation_closures(credential_id)
        except PresenceUnavailable:
            closed = {}
        return RevocationReport(credential=credential, closed_by_node=closed, remaining=remaining)

    async def _listed(self, credential: CredentialInfo) -> list[TunnelRecord]:
        try:
            records = await self._presence.lookup(credential.hospital_id)
        except PresenceUnavailable as err:
            log.warning("cannot confirm revocation of %s: %s", credential.credential_id, err)
            return []
        return [r for r in records if r.credential_id == credential.credential_id]

    async def check(self) -> int:
        """Ask the fleet database about the live tunnels' credentials once; close revoked."""
        live = self._gateway.credential_ids()
        if not live:
            return 0
        closed = 0
        for credential_id in sorted(await self._credentials.revoked(live)):
            closed += await self.close_local(credential_id)
        return closed

    async def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                await self.check()
                self._recovered("poll")
            except _FAILURES as err:
                self._failed("poll", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)

    async def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                async for credential_id in self._presence.revocations():
                    self._recovered("messages")
                    # Acted on only if the fleet database agrees: presence is not the
                    # authority on credentials.
                    if await self._credentials.revoked([credential_id]):
                        await self.close_local(credential_id)
            except _FAILURES as err:
                self._failed("messages", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)

    def _failed(self, what: str, err: Exception) -> None:
        # One line per outage, not one per second.
        if what not in self._failing:
            self._failing.add(what)
            log.warning(
                "revocation %s failing, retrying every %.1fs: %s", what, self._interval, err
            )

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.info("revocation %s working again", what)

    async def run(self) -> None:
        """Poll and listen until `shutdown`."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll(), name="revocation-poll")
            listener = group.create_task(self._listen(), name="revocation-messages")
            await self._stop.wait()
            listener.cancel()  # it may be waiting for the next message

    async def shutdown(self) -> None:
        """Stop polling and listening."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> RevocationWatcher:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="revocations")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
