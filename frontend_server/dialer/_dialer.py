"""Holds the edge's tunnels to the cloud: one supervisor per connection slot.

Each slot dials a gateway, runs one `EdgeTunnel` until it ends, waits, and dials the next
gateway. It always waits a full-jitter backoff, after a go-away too: a tunnel that stayed up
for ``stable_after`` resets the backoff (so a deploy's drain costs at most
``backoff_initial``), while one drained soon after it came up counts as a failure (a gateway
that welcomes and drains at once cannot make the edge redial in a loop). A draining node's
``go_away.reconnect_after`` is honoured too, counted from the go-away and capped at
``reconnect_after_max``. With more than one gateway the edge holds two tunnels, starting on
different nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from types import TracebackType

import grpc

from frontend_server.dialer._backoff import Backoff
from mesh.net import parse_hostport
from mesh.retry import RetryPolicy
from mesh.tunnel import (
    EdgeIdentity,
    EdgeTunnel,
    Session,
    TunnelConfig,
    TunnelRefused,
    TunnelServer,
)
from mesh.version import CONTRACT_RELEASE, SOFTWARE_VERSION

__all__ = ["Dialer", "DialerConfig", "SlotState", "dial"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DialerConfig:
    """Where and how an edge dials out."""

    gateways: tuple[str, ...]
    """``HOST:PORT`` of the cloud gateway nodes; at least one."""
    hospital_id: str
    """The hospital this edge serves."""
    edge_id: str
    """This edge process among the hospital's edges."""
    credential: str = dataclasses.field(repr=False)
    """The hospital credential (bearer token)."""
    tls: bool = True
    """Dial with TLS (production always does)."""
    ca_cert: bytes | None = None
    """PEM of the CA to trust; ``None`` uses the system roots."""
    connections: int | None = None
    """Tunnels to hold; default 2 when more than one gateway is given, else 1."""
    backoff_initial: float = 1.0
    """First backoff window after a failure, seconds."""
    backoff_max: float = 60.0
    """Largest backoff window, seconds."""
    stable_after: float = 60.0
    """A tunnel that stayed up this long resets the backoff."""
    credential_backoff: float = 300.0
    """Seconds (jittered down to half) before retrying after the cloud refused or revoked
    the credential (UNAUTHENTICATED, PERMISSION_DENIED): it will not start working by
    itself, so the edge must not hammer the cloud; install a new credential and restart."""
    reconnect_after_max: float = 600.0
    """Longest wait a gateway's go-away may ask for (``reconnect_after``), so a broken or
    hostile gateway cannot park the edge for longer than ten minutes."""
    keepalive_time: float = 20.0
    """Seconds between gRPC (HTTP/2) keepalive pings on an idle connection."""
    keepalive_timeout: float = 10.0
    """Seconds to wait for a keepalive ack before the connection is considered dead."""
    contract_release: str = CONTRACT_RELEASE
    """The contract release announced in the hello (this build's, normally)."""
    tunnel: TunnelConfig = dataclasses.field(default_factory=TunnelConfig)
    """Tunnel limits and timers (ping interval: three silent intervals = dead peer)."""

    def __post_init__(self) -> None:
        if not self.gateways:
            raise ValueError("at least one gateway (--cloud HOST:PORT) is required")
        for g in self.gateways:
            parse_hostport(g)
        if not self.credential.strip():
            raise ValueError("the credential is empty")
        if self.connections is not None and self.connections < 1:
            raise ValueError("connections must be >= 1")
        if self.credential_backoff <= 0:
            raise ValueError("credential_backoff must be > 0")
        if self.reconnect_after_max < 0:
            raise ValueError("reconnect_after_max must be >= 0")

    @property
    def slots(self) -> int:
        """How many tunnels to hold."""
        if self.connections is not None:
            return self.connections
        return 2 if len(self.gateways) > 1 else 1


@dataclasses.dataclass
class SlotState:
    """What one connection slot is doing (for edge info and tests)."""

    index: int
    """The slot's connection index."""
    gateway: str = ""
    """The gateway it is connected or connecting to."""
    connected: bool = False
    """Whether its tunnel is up."""
    connects: int = 0
    """How many times its tunnel came up."""
    failures: int = 0
    """How many attempts failed."""
    last_error: str = ""
    """Why the last attempt failed or the last tunnel ended."""
    retry_in: float = 0.0
    """Seconds the slot decided to wait before its next attempt (0 after a drain)."""


class Dialer:
    """Dials out and keeps the edge's tunnels up until shut down.

    Args:
        config: gateways, identity, credential, timers.
        server: the registrar the edge's servicers were added to.
        rng: random source for jitter (tests pass a seeded one).
    """

    def __init__(
        self, config: DialerConfig, server: TunnelServer, *, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self._server = server
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._tunnels: dict[int, EdgeTunnel] = {}
        self._task: asyncio.Task[None] | None = None
        self.slots = [SlotState(index=i) for i in range(config.slots)]
        self.connected = asyncio.Event()
        """Set while at least one tunnel is up."""

    def _channel(self, target: str) -> grpc.aio.Channel:
        return dial(self.config, target)

    def _update_connected(self) -> None:
        if any(s.connected for s in self.slots):
            self.connected.set()
        else:
            self.connected.clear()

    async def _slot(self, index: int) -> None:
        cfg = self.config
        state = self.slots[index]
        backoff = Backoff(
            RetryPolicy(initial=cfg.backoff_initial, maximum=cfg.backoff_max, deadline=None),
            stable_after=cfg.stable_after,
            rng=self._rng,
        )
        gw = index % len(cfg.gateways)
        while not self._stop.is_set():
            target = cfg.gateways[gw]
            state.gateway = target
            identity = EdgeIdentity(
                hospital_id=cfg.hospital_id,
                edge_id=cfg.edge_id,
                software_version=SOFTWARE_VERSION,
                contract_release=cfg.contract_release,
                connection_index=index,
            )
            channel = self._channel(target)
            tunnel = EdgeTunnel(
                channel,
                self._server,
                credential=cfg.credential,
                identity=identity,
                config=cfg.tunnel,
            )
            up_since: list[float] = []

            def on_ready(
                session: Session, up: list[float] = up_since, target: str = target
            ) -> None:
                up.append(time.monotonic())
                state.connected = True
                state.connects += 1
                self._update_connected()
                log.info("tunnel %d up to %s", index, target)
                for warning in session.welcome.warnings:
                    log.warning("cloud says: %s", warning)

            tunnel.session.on_ready.append(on_ready)
            self._tunnels[index] = tunnel
            drained = False
            code = -1
            try:
                status = await tunnel.run()
                code = status.code
                drained = status.code == 0
                state.last_error = "" if drained else _describe(status.code, status.message)
            except TunnelRefused as err:
                code = err.status.code
                state.last_error = _describe(err.status.code, err.status.message)
                log.warning("tunnel %d to %s refused: %s", index, target, err)
            except Exception as err:  # a bug or transport error must not kill the dialer
                state.last_error = f"{type(err).__name__}: {err}"
                log.exception("tunnel %d to %s failed", index, target)
            finally:
                self._tunnels.pop(index, None)
                state.connected = False
                self._update_connected()
                await channel.close()
            if self._stop.is_set():
                break
            gw = (gw + 1) % len(cfg.gateways)
            connected_for = time.monotonic() - up_since[0] if up_since else None
            # Every end backs off, a drain too: only a tunnel that stayed up resets it.
            delay = max(backoff.next_delay(connected_for), self._reconnect_hint(tunnel.session))
            if drained:
                log.info(
                    "tunnel %d drained by %s: reconnecting elsewhere in %.1fs", index, target, delay
                )
            else:
                state.failures += 1
                if code in _CREDENTIAL_REFUSED:
                    delay = max(delay, cfg.credential_backoff * self._rng.uniform(0.5, 1.0))
                    log.error(
                        "tunnel %d: the cloud refused this edge's credential (%s): retrying in "
                        "%.0fs; ask the cloud operators for a new credential",
                        index,
                        state.last_error,
                        delay,
                    )
                log.info("tunnel %d: retrying in %.1fs (%s)", index, delay, state.last_error)
            state.retry_in = delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _reconnect_hint(self, session: Session) -> float:
        """Seconds left of the gateway's ``go_away.reconnect_after`` (capped), or 0."""
        go_away = session.peer_go_away
        if go_away is None or not go_away.HasField("reconnect_after"):
            return 0.0
        asked = min(go_away.reconnect_after.ToNanoseconds() / 1e9, self.config.reconnect_after_max)
        since = time.monotonic() - (session.peer_go_away_at or time.monotonic())
        return max(asked - since, 0.0)

    async def run(self) -> None:
        """Hold the tunnels until `shutdown`."""
        async with asyncio.TaskGroup() as group:
            for i in range(len(self.slots)):
                group.create_task(self._slot(i), name=f"dialer-slot-{i}")

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop redialing and drain the tunnels (in-flight calls finish within ``grace``)."""
        self._stop.set()
        await asyncio.gather(
            *(t.shutdown(grace) for t in list(self._tunnels.values())), return_exceptions=True
        )
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> Dialer:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="dialer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(0.0 if exc is not None else None)


def dial(config: DialerConfig, target: str) -> grpc.aio.Channel:
    """A channel to the gateway ``target`` with the dialer's TLS, keepalive and limits.

    The tunnels use it, and so does every other outbound call of the edge to the cloud
    (``EdgeService`` through `frontend_server.uplink`): one set of connection settings.
    """
    cfg = config
    options = [
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Our own backoff decides when to redial; gRPC's must not add to it.
        ("grpc.initial_reconnect_backoff_ms", 1000),
        # The channel carries only the tunnel: its limit, not gRPC's 4 MiB default.
        ("grpc.max_send_message_length", cfg.tunnel.max_inbound_outer_message_bytes),
        ("grpc.max_receive_message_length", cfg.tunnel.max_inbound_outer_message_bytes),
    ]
    if not cfg.tls:
        return grpc.aio.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=cfg.ca_cert)
    return grpc.aio.secure_channel(target, creds, options=options)


_CREDENTIAL_REFUSED = frozenset(
    c.value[0] for c in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
)


def _describe(code: int, message: str) -> str:
    name = next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
    return f"{name}: {message}"
