"""The presence records and the interface both stores implement.

Besides where each tunnel is, presence carries what the nodes of a cluster tell each other
about tunnels: revoked credentials (a message every node acts on at once), how many tunnels
each node closed for a revocation, and refused duplicate edge ids (for operators).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

__all__ = ["EdgeConflicts", "Presence", "PresenceUnavailable", "RefusedTunnel", "TunnelRecord"]

_R = TypeVar("_R")


def _dump(record: Any) -> str:
    data: dict[str, Any] = dataclasses.asdict(record)
    for key, value in data.items():
        if isinstance(value, dt.datetime):
            data[key] = value.isoformat()
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _load(cls: type[_R], text: str | bytes, times: tuple[str, ...], noun: str) -> _R:
    """A ``cls`` from JSON; keys a newer node added are ignored.

    Raises:
        ValueError: the text is not a ``noun``.
    """
    try:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        data = {k: v for k, v in data.items() if k in known}
        for key in times:
            data[key] = dt.datetime.fromisoformat(data[key])
        if "warnings" in data:
            data["warnings"] = tuple(data["warnings"])
        return cls(**data)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"not a {noun}: {err}") from None


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
    credential_id: str = ""
    """The public id of the credential the tunnel was opened with (never the token)."""
    peer: str = ""
    """The network peer the tunnel came from, e.g. ``ipv4:203.0.113.7:53122``."""

    def to_json(self) -> str:
        """Serialise for the shared store."""
        return _dump(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> TunnelRecord:
        """Parse what `to_json` wrote (fields added by newer nodes are ignored).

        Raises:
            ValueError: the text is not a record.
        """
        return _load(cls, text, ("connected_since", "last_seen"), "tunnel record")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefusedTunnel:
    """A tunnel refused because a live tunnel held its edge id and connection index."""

    hospital_id: str
    """The hospital."""
    edge_id: str
    """The edge id both claimed."""
    connection_index: int
    """The connection index both claimed."""
    credential_id: str
    """The credential the refused tunnel was opened with."""
    peer: str
    """Where the refused tunnel came from."""
    node_id: str
    """The node that refused it."""
    at: dt.datetime
    """When."""
    holder_session_id: str
    """The live tunnel that kept the edge id."""
    holder_node_id: str
    """The node holding it."""
    holder_peer: str
    """Where the live tunnel comes from."""
    holder_since: dt.datetime
    """When the live tunnel connected."""

    def to_json(self) -> str:
        """Serialise for the shared store."""
        return _dump(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> RefusedTunnel:
        """Parse what `to_json` wrote.

        Raises:
            ValueError: the text is not a record.
        """
        return _load(cls, text, ("at", "holder_since"), "refused-tunnel record")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeConflicts:
    """Refused duplicate tunnels of one hospital: how many, and the last one."""

    hospital_id: str
    """The hospital."""
    refused: int
    """Tunnels refused because another live tunnel held their edge id."""
    last: RefusedTunnel
    """The most recent one."""


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

    @abc.abstractmethod
    async def record_refusal(self, refused: RefusedTunnel) -> None:
        """Count a refused duplicate tunnel of the hospital and remember it as the last."""

    @abc.abstractmethod
    async def conflicts(self, hospital_id: str | None = None) -> list[EdgeConflicts]:
        """Refused duplicates per hospital (of one hospital, or of all), by hospital id."""

    @abc.abstractmethod
    async def publish_revocation(self, credential_id: str) -> None:
        """Tell every node (this one included) that a credential was revoked."""

    @abc.abstractmethod
    def revocations(self) -> AsyncIterator[str]:
        """Credential ids as revocations are published, until the iterator is closed.

        Raises:
            PresenceUnavailable: the shared store was lost; subscribe again later.
        """

    @abc.abstractmethod
    async def add_revocation_closures(self, credential_id: str, node_id: str, count: int) -> None:
        """Record that ``node_id`` closed ``count`` tunnels of a revoked credential."""

    @abc.abstractmethod
    async def revocation_closures(self, credential_id: str) -> dict[str, int]:
        """Tunnels of a revoked credential each node has closed (kept for a day)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
