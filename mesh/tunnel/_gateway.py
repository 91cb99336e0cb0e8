"""Cloud side: the ``TunnelService`` servicer that accepts tunnels and hands out channels.

Besides running sessions, the gateway keeps the rules about *who* may hold tunnels:

* **Credentials.** Each tunnel is opened with one credential (the authenticator says which
  hospital and which credential). One credential holds at most ``max_tunnels_per_credential``
  live tunnels (exactly, on this node; across nodes through `ClusterView`); past it the
  newcomer is refused with RESOURCE_EXHAUSTED. `close_credential` ends every tunnel of a
  revoked credential with UNAUTHENTICATED.
* **Edge identity.** A tunnel claims its ``(hospital, edge_id, connection_index)``. When a
  live tunnel already holds that key, the gateway pings it: if it answers within
  ``liveness_probe`` seconds the newcomer is refused with ALREADY_EXISTS (so a stolen
  credential plus a known edge id cannot push the real edge off), otherwise the silent
  tunnel is replaced (an edge reconnecting after its old connection went half-open). A
  draining holder (after go-away from either side) gives way without being probed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import google.rpc.status_pb2 as status_pb2
import grpc

from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.logs import PeerLimitedLog
from mesh.tunnel._channel import TunnelChannel
from mesh.tunnel._config import TunnelConfig
from mesh.tunnel._errors import make_status, reason_of
from mesh.tunnel._hooks import CallHook
from mesh.tunnel._metadata import MetadataPairs
from mesh.tunnel._session import Role, Session
from mesh.tunnel._transport import CloudGrpcTransport

_MAX_LAST_ENDS = 65536
"""Hospitals whose last tunnel end a gateway remembers (far above a fleet's size)."""

__all__ = [
    "Authenticator",
    "Claim",
    "ClusterView",
    "EdgeConflict",
    "Holder",
    "Principal",
    "TunnelGateway",
    "TunnelOrigin",
    "bearer_token",
]

log = logging.getLogger(__name__)


class Principal(Protocol):
    """Who a ``Connect`` call authenticated as (e.g. `cloud.fleet.CredentialInfo`)."""

    @property
    def hospital_id(self) -> str:
        """The hospital the credential is for."""

    @property
    def credential_id(self) -> str:
        """The credential's public id (safe to log); ``""`` when unknown."""


@dataclasses.dataclass(frozen=True)
class _Hospital:
    """A principal from an authenticator that returns a bare hospital id."""

    hospital_id: str
    credential_id: str = ""


Authenticator = Callable[
    [MetadataPairs], "Awaitable[Principal | str | None] | Principal | str | None"
]
"""Maps the ``Connect`` call's metadata to its `Principal` (or just a hospital id), or
``None`` to refuse it. A bare hospital id has no credential id: no per-credential limit
applies and `TunnelGateway.close_credential` cannot find its tunnels."""

_EdgeKey = tuple[str, str, int]
"""``(hospital_id, edge_id, connection_index)``: what one live tunnel may hold."""

_REVOKED_MEMORY = 60.0
"""Seconds a closed credential stays refused here even if its check passed a moment before
the revocation (the credential store refuses it from then on anyway)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TunnelOrigin:
    """Who opened a tunnel and from where; never the token."""

    hospital_id: str
    """The hospital of its credential."""
    credential_id: str
    """The credential's public id (``""`` when the authenticator gave none)."""
    peer: str
    """The network peer in gRPC form, e.g. ``ipv4:203.0.113.7:53122``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A new tunnel claiming an edge id and connection index (asked of `ClusterView`)."""

    hospital_id: str
    """The hospital."""
    credential_id: str
    """The credential it was opened with."""
    edge_id: str
    """The edge id from its hello."""
    connection_index: int
    """The connection index from its hello."""
    session_id: str
    """The session id it will get if accepted."""
    peer: str
    """Where it came from."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Holder:
    """The live tunnel that holds an edge id and connection index."""

    session_id: str
    """Its session id."""
    node_id: str
    """The gateway node holding it."""
    since: dt.datetime
    """When it connected."""
    peer: str
    """Where it came from."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeConflict:
    """A tunnel refused because a live tunnel held its edge id and connection index."""

    claim: Claim
    """The refused tunnel."""
    holder: Holder
    """The live tunnel that keeps the key."""
    node_id: str
    """The node that refused it."""
    at: dt.datetime
    """When."""


class ClusterView(Protocol):
    """What a gateway asks about tunnels on the other nodes of its cluster."""

    async def credential_tunnels(self, hospital_id: str, credential_id: str) -> int:
        """How many live tunnels of the credential other nodes hold."""

    async def holder(self, claim: Claim) -> Holder | None:
        """A live tunnel on another node holding the claim's edge id and connection index.

        The other node probes it first and replaces it if it stays silent, so a tunnel is
        returned only if it answered.
        """


def bearer_token(metadata: MetadataPairs) -> str | None:
    """Returns the token of an ``authorization: Bearer …`` header, if there is one."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip() or None
    return None


@dataclasses.dataclass
class _Entry:
    origin: TunnelOrigin
    key: _EdgeKey | None = None


class _KeyLocks:
    """One lock per edge key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[_EdgeKey, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: _EdgeKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TunnelGateway(tunnel_pb2_grpc.TunnelServiceServicer):
    """Accepts tunnels from edges and keeps the live sessions of each hospital.

    Register it with ``tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)``
    and get a channel to a hospital with `channel`.

    Args:
        authenticate: Maps the call metadata to a `Principal` or a hospital id (``None``:
            UNAUTHENTICATED). May be sync or async; `bearer_token` extracts the credential.
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
        max_tunnels_per_credential: Live tunnels one credential may hold (``None``: no
            limit). Counted exactly on this node, plus what ``cluster`` reports.
        liveness_probe: Seconds a tunnel holding an edge key has to answer a ping when a
            newcomer claims the same key.
        cluster: Tunnels on other nodes (credential counts, edge keys); ``None`` for a
            gateway alone.
        on_conflict: Called with each refused duplicate (after it was logged).
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
        max_tunnels_per_credential: int | None = 4,
        liveness_probe: float = 2.0,
        cluster: ClusterView | None = None,
        on_conflict: Callable[[EdgeConflict], None] | None = None,
    ) -> None:
        if max_tunnels_per_credential is not None and max_tunnels_per_credential < 1:
            raise ValueError("max_tunnels_per_credential must be >= 1 (or None)")
        if liveness_probe <= 0:
            raise ValueError("liveness_probe must be > 0")
        self._authenticate = authenticate
        self._node_id = node_id
        self._config = config or TunnelConfig()
        self._hooks = tuple(hooks)
        self._on_session = on_session
        self._next_epoch = next_epoch
        self._check_hello = check_hello
        self._max_per_credential = max_tunnels_per_credential
        self._liveness_probe = liveness_probe
        self._cluster = cluster
        self._on_conflict = on_conflict
        self._sessions: dict[str, list[Session]] = {}
        # How each hospital's last tunnel here ended (bounded: oldest hospitals dropped).
        self._last_end: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._entries: dict[Session, _Entry] = {}
        self._by_credential: dict[str, set[Session]] = {}
        self._holders: dict[_EdgeKey, Session] = {}
        self._key_locks = _KeyLocks()
        self._revoked: dict[str, float] = {}
        self._over_limit_logged: set[str] = set()
        self._epochs: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._closing = False
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._peer_log = PeerLimitedLog(log)

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: Any,
        context: grpc.aio.ServicerContext[tunnel_pb2.ConnectRequest, tunnel_pb2.ConnectResponse],
    ) -> None:
        """Runs one tunnel for as long as it lasts (see ``tunnel.proto``)."""
        metadata: MetadataPairs = list(context.invocation_metadata() or ())
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway is shutting down")
        found = self._authenticate(metadata)
        if inspect.isawaitable(found):
            found = await found
        if not found:
            peer = context.peer() or ""
            self._peer_log.warning(
                _host(peer), "tunnel refused from %s: missing or bad credential", peer
            )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad credential")
        principal: Principal = _Hospital(found) if isinstance(found, str) else found
        origin = TunnelOrigin(
            hospital_id=principal.hospital_id,
            credential_id=principal.credential_id,
            peer=context.peer() or "",
        )
        hospital = origin.hospital_id
        refusal = self._refuse_credential(origin)
        if refusal is not None:
            self._log_refusal(origin, refusal)
            await self._abort(context, refusal)

        epoch = self._epochs.get(hospital, 0) + 1
        if self._next_epoch is not None:
            try:
                epoch = max(epoch, await self._next_epoch(hospital))
            except Exception as err:  # shared store down: the local counter still orders
                log.warning(
                    "epoch source failed for %s, using the local counter: %s", hospital, err
                )
        self._epochs[hospital] = max(self._epochs.get(hospital, 0), epoch)
        # Checked again with no await before the session is counted: exact per node.
        refusal = self._refuse_credential(origin)
        if refusal is not None:
            self._log_refusal(origin, refusal)
            await self._abort(context, refusal)
        welcome = tunnel_pb2.Welcome(
            session_id=uuid.uuid4().hex, node_id=self._node_id, epoch=epoch
        )

        async def accept(hello: tunnel_pb2.Hello) -> status_pb2.Status | None:
            if hello.hospital_id != hospital:
                return make_status(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"credential is not for hospital {hello.hospital_id!r}",
                )
            if self._check_hello is not None:
                refusal = await self._check_hello(hello, welcome)
                if refusal is not None:
                    return refusal
            return await self._claim(session, hello)

        session = Session(
            CloudGrpcTransport(context),
            role=Role.CLOUD,
            config=self._config,
            accept_hello=accept,
            welcome=welcome,
        )
        self._entries[session] = _Entry(origin)
        if origin.credential_id:
            self._by_credential.setdefault(origin.credential_id, set()).add(session)
        self._sessions.setdefault(hospital, []).append(session)
        session.on_ready.append(lambda s: self._session_ready(hospital, s))
        try:
            status = await session.run()
        finally:
            # Also when grpc cancels this handler (the edge's connection broke): the
            # session has set its status ("tunnel lost") before the cancellation went on.
            if session.ready.is_set() and session.status is not None:
                self._note_end(hospital, session.status)
            self._forget(hospital, session)
            if self._on_session is not None and session.ready.is_set():
                self._on_session(session, True)
        if session.ready.is_set():
            log.log(
                logging.INFO if status.code in (0, _CANCELLED) else logging.WARNING,
                "tunnel down: hospital %s, edge %s, connection %d, session %s after %.0fs: %s",
                hospital,
                session.hello.edge_id or "-",
                session.hello.connection_index,
                welcome.session_id,
                time.time() - session.created,
                _cause(status),
            )
        elif status.code not in (0, _CANCELLED):
            self._log_refusal(origin, status)
        if status.code not in (0, grpc.StatusCode.CANCELLED.value[0]):
            await self._abort(context, status)

    @staticmethod
    async def _abort(
        context: grpc.aio.ServicerContext[tunnel_pb2.ConnectRequest, tunnel_pb2.ConnectResponse],
        status: status_pb2.Status,
    ) -> None:
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code), None)
        await context.abort(code or grpc.StatusCode.UNKNOWN, status.message)

    def _forget(self, hospital: str, session: Session) -> None:
        sessions = self._sessions.get(hospital, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._sessions.pop(hospital, None)
        entry = self._entries.pop(session, None)
        if entry is None:
            return
        credential = entry.origin.credential_id
        held = self._by_credential.get(credential)
        if held is not None:
            held.discard(session)
            if not held:
                del self._by_credential[credential]
        limit = self._max_per_credential or 0
        if len(self._by_credential.get(credential, ())) < limit:
            self._over_limit_logged.discard(credential)
        if entry.key is not None and self._holders.get(entry.key) is session:
            del self._holders[entry.key]

    # -- credentials -----------------------------------------------------------------------

    def _is_revoked(self, credential_id: str) -> bool:
        closed_at = self._revoked.get(credential_id)
        return closed_at is not None and time.monotonic() - closed_at < _REVOKED_MEMORY

    def _refuse_credential(self, origin: TunnelOrigin) -> status_pb2.Status | None:
        credential = origin.credential_id
        if not credential:
            return None
        if self._is_revoked(credential):
            return make_status(grpc.StatusCode.UNAUTHENTICATED, "credential revoked")
        held = len(self._by_credential.get(credential, ()))
        if self._max_per_credential is not None and held >= self._max_per_credential:
            return self._over_limit(origin, held, "on this node")
        return None

    def _over_limit(self, origin: TunnelOrigin, held: int, where: str) -> status_pb2.Status:
        limit = self._max_per_credential
        message = (
            f"credential {origin.credential_id} already holds {held} live tunnel(s) {where}: "
            f"the limit is {limit} per credential (max_tunnels_per_credential)"
        )
        # One line per credential while it stays over the limit, not one per attempt.
        if origin.credential_id not in self._over_limit_logged:
            self._over_limit_logged.add(origin.credential_id)
            log.warning(
                "refusing tunnels of hospital %s from %s: %s",
                origin.hospital_id,
                origin.peer,
                message,
            )
        return make_status(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def close_credential(self, credential_id: str, status: status_pb2.Status | None = None) -> int:
        """Closes every tunnel of a (revoked) credential on this node, logging each.

        New tunnels of the credential are refused here for a minute as well, which covers
        one whose credential check passed just before the revocation.

        Args:
            credential_id: The credential's public id.
            status: How the tunnels end; default UNAUTHENTICATED "credential revoked", which
                tells the edge not to retry soon.

        Returns:
            How many live tunnels (or tunnels still in their handshake) it closed.
        """
        now = time.monotonic()
        for stale in [c for c, t in self._revoked.items() if now - t >= _REVOKED_MEMORY]:
            del self._revoked[stale]
        self._revoked[credential_id] = now
        status = status or make_status(grpc.StatusCode.UNAUTHENTICATED, "credential revoked")
        closed = 0
        for session in sorted(self._by_credential.pop(credential_id, ()), key=_age):
            if session.is_closed:
                continue
            hello = session.hello
            log.warning(
                "closing tunnel of hospital %s, edge %s, session %s: credential %s: %s",
                self._entries[session].origin.hospital_id,
                hello.edge_id or "-",
                session.welcome.session_id,
                credential_id,
                status.message,
            )
            session.close(status)
            closed += 1
        return closed

    def credential_ids(self) -> set[str]:
        """The credentials of this node's live tunnels (to check for revocations)."""
        return set(self._by_credential)

    def origin(self, session: Session) -> TunnelOrigin | None:
        """Who opened ``session`` and from where; ``None`` once it has ended."""
        entry = self._entries.get(session)
        return None if entry is None else entry.origin

    # -- edge identity ---------------------------------------------------------------------

    def _holder(self, session: Session) -> Holder:
        return Holder(
            session_id=session.welcome.session_id,
            node_id=self._node_id,
            since=dt.datetime.fromtimestamp(session.created, dt.UTC),
            peer=self._entries[session].origin.peer if session in self._entries else "",
        )

    @staticmethod
    def _gives_way(session: Session) -> bool:
        # Ended, or draining (this node or the edge sent go-away): the edge is moving on, so
        # its new tunnel is no conflict; the old one finishes its calls undisturbed.
        return session.is_closed or (session.ready.is_set() and not session.accepting_calls)

    async def _is_alive(self, session: Session) -> bool:
        if not session.ready.is_set():
            return True  # accepted a moment ago, still sending its welcome
        return await session.probe(self._liveness_probe)

    def _replace(self, session: Session, by: str) -> None:
        entry = self._entries.get(session)
        log.warning(
            "replacing tunnel of hospital %s, edge %s, connection %d, session %s: it did not "
            "answer a ping within %.1fs and %s claims its edge id",
            entry.origin.hospital_id if entry else "-",
            session.hello.edge_id,
            session.hello.connection_index,
            session.welcome.session_id,
            self._liveness_probe,
            by,
        )
        session.close(make_status(grpc.StatusCode.UNAVAILABLE, "replaced by a newer session"))

    async def _claim(self, session: Session, hello: tunnel_pb2.Hello) -> status_pb2.Status | None:
        entry = self._entries[session]
        origin = entry.origin
        key = (origin.hospital_id, hello.edge_id, hello.connection_index)
        claim = Claim(
            hospital_id=origin.hospital_id,
            credential_id=origin.credential_id,
            edge_id=hello.edge_id,
            connection_index=hello.connection_index,
            session_id=session.welcome.session_id,
            peer=origin.peer,
        )
        async with self._key_locks.hold(key):
            if origin.credential_id and self._is_revoked(origin.credential_id):
                return make_status(grpc.StatusCode.UNAUTHENTICATED, "credential revoked")
            holder = self._holders.get(key)
            if holder is not None and holder is not session and not self._gives_way(holder):
                if await self._is_alive(holder):
                    return self._conflict(claim, self._holder(holder))
                self._replace(holder, f"a new tunnel from {origin.peer}")
            if self._cluster is not None:
                refusal = await self._cluster_checks(claim)
                if refusal is not None:
                    return refusal
            if origin.credential_id and self._is_revoked(origin.credential_id):
                # revoked while the checks above were waiting
                return make_status(grpc.StatusCode.UNAUTHENTICATED, "credential revoked")
            entry.key = key
            self._holders[key] = session
        return None

    async def _cluster_checks(self, claim: Claim) -> status_pb2.Status | None:
        assert self._cluster is not None
        try:
            if claim.credential_id and self._max_per_credential is not None:
                here = len(self._by_credential.get(claim.credential_id, ()))  # with this one
                there = await self._cluster.credential_tunnels(
                    claim.hospital_id, claim.credential_id
                )
                if here + there > self._max_per_credential:
                    origin = TunnelOrigin(
                        hospital_id=claim.hospital_id,
                        credential_id=claim.credential_id,
                        peer=claim.peer,
                    )
                    return self._over_limit(origin, here - 1 + there, "across the cloud")
            holder = await self._cluster.holder(claim)
        except Exception as err:  # the cluster view is best effort: local rules still hold
            log.warning("cluster check of a tunnel of %s skipped: %s", claim.hospital_id, err)
            return None
        if holder is not None:
            return self._conflict(claim, holder)
        return None

    def _conflict(self, claim: Claim, holder: Holder) -> status_pb2.Status:
        since = holder.since.isoformat(timespec="seconds")
        log.warning(
            "refused tunnel of hospital %s from %s (credential %s): edge %s connection %d is "
            "held by live session %s on node %s from %s since %s",
            claim.hospital_id,
            claim.peer,
            claim.credential_id or "-",
            claim.edge_id,
            claim.connection_index,
            holder.session_id,
            holder.node_id,
            holder.peer,
            since,
        )
        if self._on_conflict is not None:
            self._on_conflict(
                EdgeConflict(
                    claim=claim,
                    holder=holder,
                    node_id=self._node_id,
                    at=dt.datetime.now(dt.UTC),
                )
            )
        return make_status(
            grpc.StatusCode.ALREADY_EXISTS,
            f"edge id {claim.edge_id!r} connection {claim.connection_index} is held by a live "
            f"session since {since}: each front-end server needs its own edge id",
        )

    async def challenge(self, session_id: str, *, claimant: str) -> Holder | None:
        """Checks a tunnel held here that a tunnel on another node claims the key of.

        Args:
            session_id: The held tunnel's session id.
            claimant: Who claims it, for the log (node and peer).

        Returns:
            The tunnel if it answered a ping; ``None`` if it is not here any more, is
            draining, or stayed silent, in which case it was closed as replaced.
        """
        session = next(
            (s for s in self._entries if s.welcome.session_id == session_id and s.ready.is_set()),
            None,
        )
        if session is None or self._gives_way(session):
            return None
        entry = self._entries[session]
        async with self._key_locks.hold(entry.key or ("", "", -1)):
            if self._gives_way(session):
                return None
            if await self._is_alive(session):
                return self._holder(session)
            self._replace(session, claimant)
            return None

    # -- sessions and channels -------------------------------------------------------------

    def _note_end(self, hospital_id: str, status: status_pb2.Status) -> None:
        self._last_end[hospital_id] = reason_of(status) or (
            "DRAINED" if status.code == 0 else f"CODE_{status.code}"
        )
        self._last_end.move_to_end(hospital_id)
        while len(self._last_end) > _MAX_LAST_ENDS:
            self._last_end.popitem(last=False)

    def last_end(self, hospital_id: str) -> str:
        """How the hospital's last tunnel on this node ended.

        The tunnel's ``ErrorInfo`` reason (``TUNNEL_LOST``, ``PEER_SILENT``, ``PEER_CLOSED``,
        ``PROTOCOL_VIOLATION`` …), ``DRAINED`` for a clean drain, "" when none ended here.
        """
        return self._last_end.get(hospital_id, "")

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

    def _log_refusal(self, origin: TunnelOrigin, status: status_pb2.Status) -> None:
        """One line per refused tunnel, bounded per peer address (a peer may retry fast)."""
        self._peer_log.warning(
            _host(origin.peer),
            "tunnel refused: hospital %s, credential %s, from %s: %s",
            origin.hospital_id,
            origin.credential_id or "-",
            origin.peer or "-",
            _cause(status),
        )

    def _session_ready(self, hospital_id: str, session: Session) -> None:
        entry = self._entries.get(session)
        log.info(
            "tunnel up: hospital %s, edge %s, connection %d, session %s, epoch %d, release %s, "
            "from %s",
            hospital_id,
            session.hello.edge_id or "-",
            session.hello.connection_index,
            session.welcome.session_id,
            session.welcome.epoch,
            session.hello.contract_release or "-",
            entry.origin.peer if entry is not None else "-",
        )
        if self._on_session is not None:
            self._on_session(session, False)
        for waiter in self._waiters.pop(hospital_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown(self, grace: float | None = None) -> None:
        """Refuses new tunnels and drains every session (go-away, then wait ``grace``)."""
        self._closing = True
        sessions = self.sessions()
        log.info(
            "draining %d tunnel(s) on node %s: go-away sent, %s s for calls in flight",
            len(sessions),
            self._node_id,
            "no limit" if grace is None else f"{grace:g}",
        )
        await asyncio.gather(*(s.drain(grace) for s in sessions))


def _age(session: Session) -> float:
    return session.created


_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def _cause(status: status_pb2.Status) -> str:
    code = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), str(status.code))
    return f"{code} {status.message}" if status.message else code


def _host(peer: str) -> str:
    """A gRPC peer (``ipv4:203.0.113.7:53122``) without its port: one key per address."""
    head, sep, port = peer.rpartition(":")
    return head if sep and port.isdigit() else peer
