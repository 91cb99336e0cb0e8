"""Routing a call for a hospital to wherever its tunnel is: this node, a peer, or nowhere."""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from cloud.errors import ERROR_DOMAIN
from cloud.gateway._secret import INTERNAL_AUTH_KEY
from cloud.presence import Presence, PresenceUnavailable
from mesh import errors
from mesh.tunnel import TunnelGateway

__all__ = ["FORWARDED_KEY", "ROUTE_KEY", "HospitalRouter", "HospitalUnavailable"]

log = logging.getLogger(__name__)

ROUTE_KEY = "x-hplus-hospital"
"""Metadata key naming the hospital a routed call is for."""
FORWARDED_KEY = "x-hplus-forwarded-by"
"""Metadata key set by a node that forwards a call to a peer: the peer must serve it from
its own tunnels and never forward again (no loops, no second discovery)."""


class HospitalUnavailable(errors.Unavailable):
    """No tunnel of the hospital is reachable (UNAVAILABLE, ``HOSPITAL_NOT_CONNECTED``).

    Details: ``ResourceInfo{hospital, <id>}`` and ``ErrorInfo.metadata["last_seen"]`` (ISO
    8601, when known) and ``["last_end"]``: how its last tunnel on this node ended
    (``TunnelGateway.last_end``: ``DRAINED``, ``TUNNEL_LOST``, ``PEER_SILENT`` …), which
    tells an edge that was stopped from a tunnel that was cut.

    Args:
        hospital_id: the hospital.
        last_seen: when it was last connected anywhere, if known.
        why: what failed, for the message (never an internal error's text).
        last_end: how its last tunnel on this node ended, if one did.
    """

    def __init__(
        self,
        hospital_id: str,
        *,
        last_seen: dt.datetime | None = None,
        why: str = "",
        last_end: str = "",
    ) -> None:
        seen = last_seen.isoformat(timespec="seconds") if last_seen else "never"
        because = f": {why}" if why else f" (last seen {seen})"
        metadata = {"last_seen": seen} if last_seen else {}
        if last_end:
            metadata["last_end"] = last_end
        super().__init__(
            f"hospital {hospital_id} is not connected{because}",
            reason="HOSPITAL_NOT_CONNECTED",
            domain=ERROR_DOMAIN,
            metadata=metadata,
            resource=errors.Resource("hospital", hospital_id),
        )
        self.hospital_id = hospital_id
        self.last_seen = last_seen


class _Routed:
    """Wraps a peer channel's multicallable to add the route and cluster credential."""

    def __init__(self, inner: Any, extra: Sequence[tuple[str, str]]) -> None:
        self._inner = inner
        self._extra = tuple(extra)

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        md = tuple(metadata or ()) + self._extra
        return self._inner(*args, metadata=md, **kwargs)


class _PeerChannel(grpc.aio.Channel):
    """A channel to a hospital through a peer node's internal endpoint."""

    def __init__(
        self, channel: grpc.aio.Channel, hospital_id: str, secret: str, node_id: str
    ) -> None:
        self._channel = channel
        self._extra = (
            (ROUTE_KEY, hospital_id),
            (INTERNAL_AUTH_KEY, secret),
            (FORWARDED_KEY, node_id),
        )

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self._channel.unary_unary(method, *args, **kwargs), self._extra)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self._channel.unary_stream(method, *args, **kwargs), self._extra)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self._channel.stream_unary(method, *args, **kwargs), self._extra)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Routed(self._channel.stream_stream(method, *args, **kwargs), self._extra)

    async def close(self, grace: float | None = None) -> None:
        """Peer channels are shared and closed by the router."""

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def __aenter__(self) -> _PeerChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class HospitalRouter:
    """Finds the tunnel of a hospital: local first, then a peer node by presence.

    Local calls never touch Redis, so a Redis outage leaves local tunnels serving; a call
    that needs a peer then fails fast with `HospitalUnavailable`.

    Args:
        gateway: this node's tunnel gateway.
        presence: where every node publishes its tunnels.
        node_id: this node's id (records of this node are never forwarded to).
        secret: the cluster secret for peers' internal endpoints.
        peer_credentials: TLS credentials for peers, or ``None`` for plaintext.
        peer_interceptors: made per peer address, put on its channel (tracing, metrics).
    """

    def __init__(
        self,
        gateway: TunnelGateway,
        presence: Presence,
        *,
        node_id: str,
        secret: str,
        peer_credentials: grpc.ChannelCredentials | None,
        peer_interceptors: Callable[[str], Sequence[grpc.aio.ClientInterceptor]] | None = None,
    ) -> None:
        self._interceptors = peer_interceptors
        self._gateway = gateway
        self._presence = presence
        self._node_id = node_id
        self._secret = secret
        self._creds = peer_credentials
        self._peers: dict[str, grpc.aio.Channel] = {}

    async def channel_for(self, hospital_id: str) -> grpc.aio.Channel:
        """A channel whose calls reach ``hospital_id``'s edge.

        Raises:
            HospitalUnavailable: the hospital has no tunnel on any reachable node.
        """
        # Check without pick(): pick advances the round robin the channel relies on.
        if any(s.accepting_calls for s in self._gateway.sessions(hospital_id)):
            return self._gateway.channel(hospital_id)
        try:
            records = [
                r for r in await self._presence.lookup(hospital_id) if r.node_id != self._node_id
            ]
            if not records:
                last = await self._presence.last_seen(hospital_id)
                raise HospitalUnavailable(
                    hospital_id, last_seen=last, last_end=self._gateway.last_end(hospital_id)
                )
        except PresenceUnavailable as err:
            log.warning("routing %s: %s", hospital_id, err)
            raise HospitalUnavailable(hospital_id, why="tunnel presence is unavailable") from None
        # Spread load over the hospital's tunnels on other nodes.
        record = random.choice(records)
        return _PeerChannel(
            self.peer_channel(record.node_address), hospital_id, self._secret, self._node_id
        )

    def peer_channel(self, address: str) -> grpc.aio.Channel:
        """The shared channel to a peer node's internal endpoint (closed by `close`)."""
        channel = self._peers.get(address)
        if channel is None:
            interceptors = self._interceptors(address) if self._interceptors else None
            if self._creds is None:
                channel = grpc.aio.insecure_channel(address, interceptors=interceptors)
            else:
                channel = grpc.aio.secure_channel(address, self._creds, interceptors=interceptors)
            self._peers[address] = channel
        return channel

    async def close(self) -> None:
        """Close the channels to peer nodes."""
        peers, self._peers = list(self._peers.values()), {}
        for channel in peers:
            await channel.close()
