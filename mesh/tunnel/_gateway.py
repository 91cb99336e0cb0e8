"""Cloud side: the ``TunnelService`` servicer that accepts tunnels and hands out channels."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import google.rpc.status_pb2 as status_pb2
import grpc

from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.tunnel._channel import TunnelChannel
from mesh.tunnel._config import TunnelConfig
from mesh.tunnel._errors import make_status
from mesh.tunnel._hooks import CallHook
from mesh.tunnel._metadata import MetadataPairs
from mesh.tunnel._session import Role, Session
from mesh.tunnel._transport import CloudGrpcTransport

__all__ = ["Authenticator", "TunnelGateway", "bearer_token"]

log = logging.getLogger(__name__)

Authenticator = Callable[[MetadataPairs], "Awaitable[str | None] | str | None"]
"""Maps the ``Connect`` call's metadata to the hospital id of its credential, or ``None``."""


def bearer_token(metadata: MetadataPairs) -> str | None:
    """Returns the token of an ``authorization: Bearer …`` header, if there is one."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip() or None
    return None


class TunnelGateway(tunnel_pb2_grpc.TunnelServiceServicer):
    """Accepts tunnels from edges and keeps the live sessions of each hospital.

    Register it with ``tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)``
    and get a channel to a hospital with `channel`.

    Args:
        authenticate: Maps the call metadata to a hospital id (``None``: UNAUTHENTICATED).
            May be sync or async; `bearer_token` extracts the credential.
        node_id: This gateway node's id (in the welcome).
        config: Limits and timers.
        hooks: Call hooks for channels made by `channel`.
        on_session: Called as ``on_session(session, ended)``: with ``False`` once a
            session's handshake succeeded, with ``True`` when it ends; presence tracking
            plugs in here.
        check_hello: Further checks of an authenticated edge's hello (e.g. its contract
            release against the registry), called as ``check_hello(hello, welcome)``;
            returns a refusal status, or ``None`` to accept (it may add
            ``welcome.warnings`` for the edge's operators).
        next_epoch: Returns a connection epoch for a hospital that is higher than every
            earlier one on any node (shared presence); when absent or failing, a per-node
            counter is used. The result never goes below this node's own counter.
    """

    def __init__(
        self,
        *,
        authenticate: Authenticator,
        node_id: str = "node",
        config: TunnelConfig | None = None,
        hooks: Sequence[CallHook] = (),
        on_session: Callable[[Session, bool], None] | None = None,
        next_epoch: Callable[[str], Awaitable[int]] | None = None,
        check_hello: Callable[
            [tunnel_pb2.Hello, tunnel_pb2.Welcome], Awaitable[status_pb2.Status | None]
        ]
        | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._node_id = node_id
        self._config = config or TunnelConfig()
        self._hooks = tuple(hooks)
        self._on_session = on_session
        self._next_epoch = next_epoch
        self._check_hello = check_hello
        self._sessions: dict[str, list[Session]] = {}
        self._epochs: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._closing = False
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: Any,
        context: grpc.aio.ServicerContext[tunnel_pb2.ConnectRequest, tunnel_pb2.ConnectResponse],
    ) -> None:
        """Runs one tunnel for as long as it lasts (see ``tunnel.proto``)."""
        metadata: MetadataPairs = list(context.invocation_metadata() or ())
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway is shutting down")
        hospital = self._authenticate(metadata)
        if inspect.isawaitable(hospital):
            hospital = await hospital
        if not hospital:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad credential")
        assert isinstance(hospital, str)

        async def accept(hello: tunnel_pb2.Hello) -> status_pb2.Status | None:
            if hello.hospital_id != hospital:
                return make_status(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"credential is not for hospital {hello.hospital_id!r}",
                )
            if self._check_hello is not None:
                return await self._check_hello(hello, welcome)
            return None

        epoch = self._epochs.get(hospital, 0) + 1
        if self._next_epoch is not None:
            try:
                epoch = max(epoch, await self._next_epoch(hospital))
            except Exception as err:  # shared store down: the local counter still orders
                log.warning(
                    "epoch source failed for %s, using the local counter: %s", hospital, err
                )
        self._epochs[hospital] = epoch
        welcome = tunnel_pb2.Welcome(
            session_id=uuid.uuid4().hex, node_id=self._node_id, epoch=epoch
        )
        session = Session(
            CloudGrpcTransport(context),
            role=Role.CLOUD,
            config=self._config,
            accept_hello=accept,
            welcome=welcome,
        )
        self._sessions.setdefault(hospital, []).append(session)
        session.on_ready.append(lambda s: self._session_ready(hospital, s))
        try:
            status = await session.run()
        finally:
            sessions = self._sessions.get(hospital, [])
            if session in sessions:
                sessions.remove(session)
            if not sessions:
                self._sessions.pop(hospital, None)
            if self._on_session is not None and session.ready.is_set():
                self._on_session(session, True)
        if status.code not in (0, grpc.StatusCode.CANCELLED.value[0]):
            code = next((c for c in grpc.StatusCode if c.value[0] == status.code), None)
            await context.abort(code or grpc.StatusCode.UNKNOWN, status.message)

    def sessions(self, hospital_id: str | None = None) -> list[Session]:
        """Live sessions, of one hospital or of all."""
        if hospital_id is not None:
            return list(self._sessions.get(hospital_id, ()))
        return [s for group in self._sessions.values() for s in group]

    def pick(self, hospital_id: str) -> Session | None:
        """A session of ``hospital_id`` that accepts calls (round robin), or ``None``."""
        ready = [s for s in self._sessions.get(hospital_id, ()) if s.accepting_calls]
        if not ready:
            return None
        return ready[next(self._round_robin) % len(ready)]

    def channel(self, hospital_id: str) -> TunnelChannel:
        """A channel to ``hospital_id`` that uses whichever of its tunnels is up per call."""
        return TunnelChannel(lambda: self.pick(hospital_id), hooks=self._hooks)

    async def wait_for_hospital(self, hospital_id: str) -> Session:
        """Waits until ``hospital_id`` has a session that accepts calls."""
        while True:
            session = self.pick(hospital_id)
            if session is not None:
                return session
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(hospital_id, []).append(waiter)
            try:
                await waiter
            finally:
                waiters = self._waiters.get(hospital_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(hospital_id, None)

    def _session_ready(self, hospital_id: str, session: Session) -> None:
        # A reconnecting edge replaces its own stale session (same edge and connection
        # index, lower epoch): the old outer stream may be half-open and never fail by itself.
        hello = session.hello
        for other in self._sessions.get(hospital_id, []):
            if (
                other is not session
                and other.hello.edge_id == hello.edge_id
                and other.hello.connection_index == hello.connection_index
                and other.welcome.epoch < session.welcome.epoch
            ):
                other.close(make_status(grpc.StatusCode.UNAVAILABLE, "replaced by a newer session"))
        if self._on_session is not None:
            self._on_session(session, False)
        for waiter in self._waiters.pop(hospital_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown(self, grace: float | None = None) -> None:
        """Refuses new tunnels and drains every session (go-away, then wait ``grace``)."""
        self._closing = True
        await asyncio.gather(*(s.drain(grace) for s in self.sessions()))
