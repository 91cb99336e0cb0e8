"""Presence kept in this process: a single node needs no Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

from cloud.presence._model import EdgeConflicts, Presence, RefusedTunnel, TunnelRecord

__all__ = ["InProcessPresence"]


class InProcessPresence(Presence):
    """Presence for one node: plain dictionaries."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, TunnelRecord]] = {}
        self._last_seen: dict[str, dt.datetime] = {}
        self._epochs: dict[str, int] = {}
        self._conflicts: dict[str, EdgeConflicts] = {}
        self._closures: dict[str, dict[str, int]] = {}
        self._subscribers: set[asyncio.Queue[str]] = set()

    async def put(self, record: TunnelRecord) -> None:
        """Publish or refresh one tunnel."""
        self._records.setdefault(record.hospital_id, {})[record.session_id] = record
        self._last_seen[record.hospital_id] = record.last_seen

    async def remove(self, hospital_id: str, session_id: str) -> None:
        """Withdraw one tunnel."""
        sessions = self._records.get(hospital_id, {})
        if sessions.pop(session_id, None) is not None:
            self._last_seen[hospital_id] = dt.datetime.now(dt.UTC)
        if not sessions:
            self._records.pop(hospital_id, None)

    async def lookup(self, hospital_id: str) -> list[TunnelRecord]:
        """The hospital's live tunnels."""
        return list(self._records.get(hospital_id, {}).values())

    async def last_seen(self, hospital_id: str) -> dt.datetime | None:
        """When the hospital was last connected."""
        return self._last_seen.get(hospital_id)

    async def all(self) -> list[TunnelRecord]:
        """Every live tunnel."""
        return [r for group in self._records.values() for r in group.values()]

    async def next_epoch(self, hospital_id: str) -> int:
        """A higher epoch for the hospital."""
        self._epochs[hospital_id] = self._epochs.get(hospital_id, 0) + 1
        return self._epochs[hospital_id]

    async def record_refusal(self, refused: RefusedTunnel) -> None:
        """Count a refused duplicate and keep it as the last."""
        known = self._conflicts.get(refused.hospital_id)
        self._conflicts[refused.hospital_id] = EdgeConflicts(
            hospital_id=refused.hospital_id,
            refused=(known.refused if known else 0) + 1,
            last=refused,
        )

    async def conflicts(self, hospital_id: str | None = None) -> list[EdgeConflicts]:
        """Refused duplicates per hospital."""
        return [
            c for h, c in sorted(self._conflicts.items()) if hospital_id is None or h == hospital_id
        ]

    async def publish_revocation(self, credential_id: str) -> None:
        """Hand the id to every subscriber in this process."""
        for queue in self._subscribers:
            queue.put_nowait(credential_id)

    async def revocations(self) -> AsyncIterator[str]:
        """Revocations published from now on."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def add_revocation_closures(self, credential_id: str, node_id: str, count: int) -> None:
        """Add to the node's count for the credential."""
        nodes = self._closures.setdefault(credential_id, {})
        nodes[node_id] = nodes.get(node_id, 0) + count

    async def revocation_closures(self, credential_id: str) -> dict[str, int]:
        """Closed tunnels of the credential, per node."""
        return dict(self._closures.get(credential_id, {}))
