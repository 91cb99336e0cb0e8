"""Edge side: one tunnel from this edge to a cloud gateway node, serving a `TunnelServer`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

import google.rpc.status_pb2 as status_pb2
import grpc

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import TunnelConfig
from mesh.tunnel._errors import TunnelRefused
from mesh.tunnel._server import TunnelServer
from mesh.tunnel._session import Role, Session
from mesh.tunnel._transport import EdgeGrpcTransport, connect_raw

__all__ = ["EdgeIdentity", "EdgeTunnel"]


@dataclass(frozen=True, kw_only=True)
class EdgeIdentity:
    """Who this edge is; goes into the hello."""

    hospital_id: str
    """The hospital this edge serves (must match the credential's)."""
    edge_id: str
    """This edge process among the hospital's edges."""
    software_version: str = "0.0.0"
    """The edge's software version (semver)."""
    contract_release: str = "0.0.0"
    """The contract release the edge was built against (semver)."""
    connection_index: int = 0
    """Which of this edge's tunnels this is."""

    def __post_init__(self) -> None:
        if not self.hospital_id or not self.edge_id:
            raise ValueError("hospital_id and edge_id are required")


class EdgeTunnel:
    """One outer ``TunnelService.Connect`` call, serving ``server``'s servicers through it.

    It does not reconnect: `run` returns when the tunnel ends and the dialer decides what
    next (back off, another node, or stop); an `EdgeTunnel` runs once, a reconnect builds a
    new one. ``drain_requested`` is set when the gateway asks the edge to move elsewhere.
    Use ``async with`` to run it in an owned task, or call `run` yourself and `shutdown`
    from elsewhere.

    Args:
        channel: A ``grpc.aio`` channel to the gateway node (TLS in production).
        server: The registrar the servicers were added to.
        credential: The hospital credential, sent as ``authorization: Bearer …``.
        identity: Hospital id, edge id and versions for the hello.
        config: Limits and timers.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        server: TunnelServer,
        *,
        credential: str,
        identity: EdgeIdentity,
        config: TunnelConfig | None = None,
    ) -> None:
        self._channel = channel
        self._server = server
        self._credential = credential
        self._identity = identity
        self._config = config or TunnelConfig()
        hello = tunnel_pb2.Hello(
            hospital_id=identity.hospital_id,
            edge_id=identity.edge_id,
            software_version=identity.software_version,
            contract_release=identity.contract_release,
            services=server.services,
            connection_index=identity.connection_index,
        )
        self._transport = EdgeGrpcTransport(self._open_call)
        self.session = Session(
            self._transport,
            role=Role.EDGE,
            config=self._config,
            hello=hello,
            on_open=server.on_open,
        )
        self._task: asyncio.Task[status_pb2.Status] | None = None

    def _open_call(self) -> grpc.aio.StreamStreamCall[tunnel_pb2.ConnectRequest, object]:
        # Raw responses: the transport decodes them, so garbage is a protocol violation.
        return connect_raw(self._channel, (("authorization", f"Bearer {self._credential}"),))

    async def run(self) -> status_pb2.Status:
        """Runs the tunnel until it ends.

        Returns:
            The final status: OK after a drain, otherwise why the tunnel was lost.

        Raises:
            TunnelRefused: The cloud refused the tunnel (bad credential, wrong hospital,
                no common revision) or could not be reached.
        """
        self._server.attach(self.session)
        del self.session.hello.services[:]
        self.session.hello.services.extend(self._server.services)
        try:
            status = await self.session.run()
        finally:
            self._server.detach(self.session)
            self._transport.cancel()
        if not self.session.ready.is_set():
            raise TunnelRefused(status)
        return status

    async def wait_ready(self) -> None:
        """Waits until the handshake has succeeded."""
        await self.session.ready.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Drains the tunnel: go-away, finish calls in flight (up to ``grace``), end."""
        await self.session.drain(grace)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> EdgeTunnel:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="edge-tunnel")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(0.0 if exc is not None else None)

    @property
    def drain_requested(self) -> asyncio.Event:
        """Set when the gateway sent ``go_away``: connect a fresh tunnel (elsewhere)."""
        return self.session.drain_requested

    @property
    def task(self) -> asyncio.Task[status_pb2.Status] | None:
        """The task running the tunnel under ``async with``."""
        return self._task
