"""Presence kept in this process: a single node needs no Redis."""

from __future__ import annotations

import datetime as dt

from cloud.presence._model import Presence, TunnelRecord

__all__ = ["InProcessPresence"]


class InProcessPresence(Presence):
    """Presence for one node: plain dictionaries."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, TunnelRecord]] = {}
        self._last_seen: dict[str, dt.datetime] = {}
        self._epochs: dict[str, int] = {}

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
