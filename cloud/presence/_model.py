"""The presence record and the interface both stores implement."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
from typing import Any

__all__ = ["Presence", "PresenceUnavailable", "TunnelRecord"]


class PresenceUnavailable(Exception):
    """The shared presence store (Redis) cannot be reached."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TunnelRecord:
    """One live tunnel of one hospital, as the node holding it publishes it."""

    hospital_id: str
    """The hospital the tunnel serves."""
    session_id: str
    """The tunnel session, unique across nodes."""
    node_id: str
    """The gateway node holding the tunnel."""
    node_address: str
    """``HOST:PORT`` of that node's internal (node-to-node) endpoint."""
    epoch: int
    """The hospital's connection epoch when this tunnel was accepted."""
    edge_id: str
    """The edge process at the other end."""
    edge_version: str
    """The edge's software version."""
    contract_release: str
    """The contract release the edge speaks."""
    connection_index: int = 0
    """Which of the edge's tunnels this is."""
    revision: int = 0
    """The negotiated tunnel protocol revision."""
    connected_since: dt.datetime
    """When the handshake completed."""
    last_seen: dt.datetime
    """When the node last heard from the edge (heartbeat time)."""
    rtt_ms: float | None = None
    """Last ping round-trip time, in milliseconds."""
    in_flight: int = 0
    """Calls open on the tunnel at the last heartbeat."""
    warnings: tuple[str, ...] = ()
    """Warnings for operators given at the handshake (e.g. release outside the window)."""

    def to_json(self) -> str:
        """Serialise for the shared store."""
        data: dict[str, Any] = dataclasses.asdict(self)
        data["connected_since"] = self.connected_since.isoformat()
        data["last_seen"] = self.last_seen.isoformat()
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TunnelRecord:
        """Parse what `to_json` wrote.

        Raises:
            ValueError: the text is not a record.
        """
        try:
            data = json.loads(text)
            data["connected_since"] = dt.datetime.fromisoformat(data["connected_since"])
            data["last_seen"] = dt.datetime.fromisoformat(data["last_seen"])
            data["warnings"] = tuple(data.get("warnings", ()))
            return cls(**data)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a tunnel record: {err}") from None


class Presence(abc.ABC):
    """Where each hospital's tunnels are."""

    @abc.abstractmethod
    async def put(self, record: TunnelRecord) -> None:
        """Publish or refresh one tunnel (and the hospital's last-seen time)."""

    @abc.abstractmethod
    async def remove(self, hospital_id: str, session_id: str) -> None:
        """Withdraw one tunnel (the hospital's last-seen time becomes now)."""

    @abc.abstractmethod
    async def lookup(self, hospital_id: str) -> list[TunnelRecord]:
        """The hospital's live tunnels, on any node."""

    @abc.abstractmethod
    async def last_seen(self, hospital_id: str) -> dt.datetime | None:
        """When any node last held a tunnel of the hospital; ``None`` if never."""

    @abc.abstractmethod
    async def all(self) -> list[TunnelRecord]:
        """Every live tunnel on every node."""

    @abc.abstractmethod
    async def next_epoch(self, hospital_id: str) -> int:
        """A connection epoch for the hospital, higher than every earlier one."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
