"""The cloud node's composition root: one ``serve(config)`` builds and runs everything.

Each service is built here from the one ``NodeConfig`` and registered with its generated
``add_*_to_server``. A service that is not implemented is not registered, so reflection
lists only what really answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.accounts import Accounts, InProcessBuckets, LogCodeSender, RedisBuckets
from cloud.census import (
    CensusFlusher,
    CensusStore,
    FieldCensus,
    census_answer,
    migrate_census,
)
from cloud.config import NodeConfig, TlsMode, parse_listen
from cloud.db import create_engine
from cloud.fleet import CredentialInfo, CredentialStore, migrate_fleet
from cloud.gateway import (
    ForwardHandler,
    HospitalRouter,
    InternalAuthInterceptor,
    PresenceCluster,
    PresenceSync,
    RevocationWatcher,
    load_or_create_secret,
)
from cloud.operations import OperationsServicer
from cloud.orders import OrderApi, Orders
from cloud.partitioned import SCHEMAS as PARTITIONED
from cloud.partitions import PartitionSet
from cloud.payments import PaymentChannel
from cloud.presence import InProcessPresence, Presence, PresenceUnavailable, RedisPresence
from cloud.readstore import ReadStore
from cloud.registry import MAX_MESSAGE_BYTES as REGISTRY_MAX_MESSAGE_BYTES
from cloud.registry import ReleaseResolver, ReleaseStatus, build_registry
from cloud.sync import RouterSource, SyncEngine
from hplus.cloud.v1 import (
    account_pb2,
    account_pb2_grpc,
    operations_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.files import make_private_dir
from mesh.tls import TlsFiles, ensure_dev_pki, load_server_credentials
from mesh.tunnel import TunnelConfig, TunnelGateway, bearer_token

__all__ = ["CloudNode", "serve"]

log = logging.getLogger(__name__)


class CloudNode:
    """A running cloud node: its public, registry and internal ``grpc.aio`` servers.

    Public endpoint (``listen``): health, reflection, ``TunnelService`` (edges dial in) and
    the patient API's ``AccountService`` (accounts live in the business partitions), with
    the tunnel's message limit. Registry endpoint (``registry_listen``): health, reflection
    and ``RegistryService``, with the registry's large limit for release images.
    Internal endpoint (``internal_listen``, cluster secret required): health, the
    operations service and the forwarder through which peer nodes reach tunnels held here.

    It also keeps the public read store (``readstore``) in sync with the hospitals whose
    tunnels it holds (``directory_sync``).

    Every part is opened into one ``AsyncExitStack`` as it is built, so a failed start and
    a shutdown take the same ordered path back; the background loops (presence heartbeat,
    revocations, census flushes, the read store's sync) run in one ``TaskGroup``: the first
    that fails is logged and stops the node (``failed`` is set; `serve` then shuts down).

    Use as ``async with CloudNode(config) as node: await node.wait()``; ``shutdown()``
    drains tunnels and in-flight calls for ``config.grace_seconds``.

    Args:
        config: the node's configuration.
        tunnel_config: limits and timers of the tunnels this node accepts (default:
            ``config.tunnel``).
    """

    def __init__(self, config: NodeConfig, *, tunnel_config: TunnelConfig | None = None) -> None:
        self.config = config
        self.port: int | None = None
        self.registry_port: int | None = None
        self.internal_port: int | None = None
        self.tls: TlsFiles | None = None
        self.gateway: TunnelGateway | None = None
        self.router: HospitalRouter | None = None
        self.presence: Presence | None = None
        self.credentials: CredentialStore | None = None
        self._tunnel_config = tunnel_config or config.tunnel
        self._servers: list[grpc.aio.Server] = []
        """Public, registry, internal: stopped in this order."""
        self._started_servers: set[int] = set()
        self._stopped_servers: set[int] = set()
        self._stack = contextlib.AsyncExitStack()
        self._registry_engine: AsyncEngine | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self.failed = asyncio.Event()
        """Set when a background loop failed; the node should be shut down."""
        self.census: FieldCensus | None = None
        self._census_flusher: CensusFlusher | None = None
        self._releases: ReleaseResolver | None = None
        self._sync: PresenceSync | None = None
        self.revocations: RevocationWatcher | None = None
        self.partitions: PartitionSet | None = None
        self.accounts: Accounts | None = None
        self.readstore: ReadStore | None = None
        self.payment_channel: PaymentChannel | None = None
        """The payment channel orders are paid through (``None``: PayOrder is UNAVAILABLE)."""
        self.order_parts: Orders | None = None
        self.orders: OrderApi | None = None
        """What the patient API's servicer delegates its order RPCs to."""
        self.directory_sync: SyncEngine | None = None
        self._health = health.aio.HealthServicer()
        self._service_names: list[str] = []
        self._registry_service_names: list[str] = []
        self._stopped = asyncio.Event()

    @property
    def service_names(self) -> list[str]:
        """Full names of the services the public endpoint serves."""
        return list(self._service_names)

    @property
    def registry_service_names(self) -> list[str]:
        """Full names of the services the registry endpoint serves."""
        return list(self._registry_service_names)

    def _address(self, listen: str) -> tuple[str, str]:
        host, port = parse_listen(listen)
        return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def _bind(self, server: grpc.aio.Server, listen: str) -> int:
        _, address = self._address(listen)
        try:
            if self.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, load_server_credentials(self.tls))
        except RuntimeError as err:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"cannot listen on {listen}: {err}") from None
        if bound == 0:
            raise OSError(f"cannot listen on {listen}")
        return bound

    async def start(self) -> None:
        """Open the databases, bind both endpoints and start serving.

        A failed start releases whatever it had opened (ports, engine, Redis pool).

        Raises:
            OSError: an address cannot be bound.
            mesh.tls.TlsError: TLS material is missing or malformed.
            cloud.db.DatabaseError: the fleet database or the read store cannot be reached.
        """
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise

    async def _start(self) -> None:
        cfg = self.config
        # Databases, secrets and keys live here: owner only (an older looser mode is
        # tightened, with a log line).
        make_private_dir(cfg.data_dir)
        if cfg.tls_mode is TlsMode.DEV:
            self.tls = ensure_dev_pki(cfg.data_dir / "tls")
        elif cfg.tls_mode is TlsMode.FILES:
            # NodeConfig has checked that all three are set in this mode.
            assert cfg.tls_cert is not None
            assert cfg.tls_key is not None
            assert cfg.tls_ca is not None
            self.tls = TlsFiles(
                ca_cert=cfg.tls_ca, server_cert=cfg.tls_cert, server_key=cfg.tls_key
            )

        stack = self._stack
        fleet_engine = create_engine(cfg.fleet_url)
        stack.push_async_callback(fleet_engine.dispose)
        await migrate_fleet(fleet_engine)
        self.credentials = CredentialStore(fleet_engine)
        registry_engine = self._registry_engine = create_engine(cfg.registry_url)
        stack.push_async_callback(registry_engine.dispose)
        await migrate_census(registry_engine)
        self.census = FieldCensus(rate=cfg.census_rate)
        census_store = CensusStore(registry_engine)
        self._census_flusher = CensusFlusher(self.census, census_store, interval=10.0)
        registry = await build_registry(
            registry_engine,
            field_usage=self._edges_on_release,
            census=census_answer(census_store, rate=cfg.census_rate),
        )
        self._releases = ReleaseResolver(registry_engine)
        self.presence = (
            RedisPresence.from_url(
                cfg.redis_url, ttl=cfg.presence_ttl, namespace=cfg.redis_namespace
            )
            if cfg.redis_url
            else InProcessPresence()
        )
        stack.push_async_callback(self.presence.close)
        secret = load_or_create_secret(cfg.cluster_secret, cfg.data_dir)
        store = self.credentials

        async def authenticate(metadata: Sequence[tuple[str, Any]]) -> CredentialInfo | None:
            return await store.authenticate(bearer_token(list(metadata)))

        # The internal endpoint binds first: its port goes into presence records.
        internal = self._server_for(
            interceptors=[InternalAuthInterceptor(secret)], options=[("grpc.so_reuseport", 0)]
        )
        self.internal_port = self._bind(internal, cfg.internal_listen)
        host, _ = self._address(cfg.internal_listen)
        node_address = f"{host}:{self.internal_port}"
        self._sync = PresenceSync(
            self.presence,
            node_id=cfg.node_id,
            node_address=node_address,
            interval=cfg.presence_ttl / 3,
        )

        def peer_channel(address: str) -> grpc.aio.Channel:
            assert self.router is not None  # built right after the gateway
            return self.router.peer_channel(address)

        self.gateway = TunnelGateway(
            authenticate=authenticate,
            node_id=cfg.node_id,
            config=self._tunnel_config,
            on_session=self._sync.on_session,
            next_epoch=self.presence.next_epoch,
            hooks=[self.census] if cfg.census_rate > 0 else [],
            check_hello=self._check_release,
            max_tunnels_per_credential=cfg.max_tunnels_per_credential,
            liveness_probe=cfg.liveness_probe_seconds,
            cluster=PresenceCluster(
                self.presence,
                peer_channel,
                node_id=cfg.node_id,
                secret=secret,
                probe_timeout=cfg.liveness_probe_seconds + 3.0,
            ),
            on_conflict=self._sync.on_conflict,
        )
        self._sync.attach(self.gateway)
        self.revocations = RevocationWatcher(
            self.gateway,
            self.presence,
            store,
            node_id=cfg.node_id,
            poll_interval=cfg.revocation_poll_seconds,
        )
        peer_creds = (
            None
            if self.tls is None
            else grpc.ssl_channel_credentials(root_certificates=self.tls.ca_cert.read_bytes())
        )
        self.router = HospitalRouter(
            self.gateway,
            self.presence,
            node_id=cfg.node_id,
            secret=secret,
            peer_credentials=peer_creds,
        )
        stack.push_async_callback(self.router.close)
        self.readstore = await ReadStore.open(
            cfg.readstore_url,
            replica_urls=cfg.readstore_replica_urls,
            max_replica_lag=cfg.sync.max_replica_lag,
            replica_check_interval=cfg.sync.replica_check_interval,
            online=self._online,
        )
        stack.push_async_callback(self.readstore.close)
        if cfg.sync.enabled:
            self.directory_sync = SyncEngine(
                self.readstore,
                RouterSource(self.gateway, self.presence, self.router, node_id=cfg.node_id),
                config=cfg.sync,
                node_id=cfg.node_id,
            )
        self.partitions = await PartitionSet.open(
            cfg.partitions_url,
            first_urls=cfg.first_partition_urls,
            schemas=PARTITIONED,
            poll=cfg.partition_map_poll,
        )
        stack.push_async_callback(self.partitions.close)  # its map watcher too
        self.accounts = await Accounts.open(
            self.partitions,
            config=cfg.accounts,
            sender=LogCodeSender(cfg.data_dir),
            buckets=RedisBuckets.from_url(cfg.redis_url, namespace=cfg.redis_namespace)
            if cfg.redis_url
            else InProcessBuckets(),
            channel_for=self.router.channel_for,
            known_hospital=self._known_hospital,
        )
        stack.push_async_callback(self.accounts.close)
        # Orders: the coordinator (its resume loop runs below, supervised) and the API the
        # patient API's servicer delegates BookAppointment, PayOrder, ... to.
        self.order_parts = Orders(
            self.partitions,
            channel_for=self.router.channel_for,
            channel=self.payment_channel,
            patients=self.accounts.patients.at_hospital,
            config=cfg.orders,
            node_id=cfg.node_id,
        )
        self.orders = self.order_parts.api

        health_pb2_grpc.add_HealthServicer_to_server(self._health, internal)
        operations_pb2_grpc.add_OperationsServiceServicer_to_server(
            OperationsServicer(
                self.presence,
                credentials=store,
                revocations=self.revocations,
                gateway=self.gateway,
            ),
            internal,
        )
        internal.add_generic_rpc_handlers([ForwardHandler(self.gateway, self.router)])

        # The public endpoint carries tunnels: its message limit is the tunnel's, so one
        # outer message cannot make the node parse (and hold) more than that.
        tunnel_limit = self._tunnel_config.max_inbound_outer_message_bytes
        server = self._server_for(
            options=[
                ("grpc.so_reuseport", 0),
                *_KEEPALIVE,
                ("grpc.max_receive_message_length", tunnel_limit),
                ("grpc.max_send_message_length", tunnel_limit),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(self.gateway, server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(self.accounts.servicer, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        self._service_names = [
            health_name,
            tunnel_pb2.DESCRIPTOR.services_by_name["TunnelService"].full_name,
            account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(self._service_names, server)
        self.port = self._bind(server, cfg.listen)

        # Release images travel whole in PushRelease/GetRelease (up to 32 MiB): the registry
        # has a server of its own with that limit.
        registry_server = self._server_for(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", REGISTRY_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", REGISTRY_MAX_MESSAGE_BYTES),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, registry_server)
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry, registry_server)
        self._registry_service_names = [
            health_name,
            registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(self._registry_service_names, registry_server)
        self.registry_port = self._bind(registry_server, cfg.registry_address)

        # Public and registry stop first; the internal endpoint last: peers still forward
        # calls for tunnels that are draining here.
        self._servers = [server, registry_server, internal]
        for started in (internal, server, registry_server):
            await started.start()
            self._started_servers.add(id(started))
        await self.partitions.start()
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("presence-heartbeat", self._sync.run),
            ("revocations", self.revocations.run),
            ("census-flush", self._census_flusher.run),
        ]
        if self.directory_sync is not None:
            loops.append(("readstore-sync", self.directory_sync.run))
        loops.append(("orders-resume", self.order_parts.run))
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(loops), name="node-background"
        )
        # Pushed last, so it runs first: the drain of everything that serves.
        stack.push_async_callback(self._drain)
        for name in ["", *self._service_names, *self._registry_service_names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "node %s listening on %s (registry %s, internal %s)",
            cfg.node_id,
            cfg.listen,
            cfg.registry_address,
            node_address,
        )

    def _server_for(self, **kwargs: Any) -> grpc.aio.Server:
        """A ``grpc.aio`` server that the exit stack stops at once if the start fails.

        A started node stops its servers in `_drain`, with the grace period.
        """
        server = grpc.aio.server(**kwargs)
        self._stack.push_async_callback(self._stop_server, server, 0.0)
        return server

    async def _stop_server(self, server: grpc.aio.Server, grace: float) -> None:
        if id(server) in self._stopped_servers:
            return
        self._stopped_servers.add(id(server))
        if id(server) not in self._started_servers:
            # grpc keeps the listening socket of a server that never started, even after
            # stop(): start it to stop it, so a failed start leaves no port bound.
            await server.start()
        await server.stop(grace)

    async def _supervise(
        self, loops: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]
    ) -> None:
        """Runs the background loops; the first that fails ends them all and marks the node."""
        try:
            async with asyncio.TaskGroup() as group:
                for name, loop in loops:
                    group.create_task(loop(), name=name)
        except* Exception as failures:
            for failure in failures.exceptions:
                log.error(
                    "node %s: a background loop failed", self.config.node_id, exc_info=failure
                )
            self.failed.set()

    async def _drain(self) -> None:
        """The ordered part of shutdown: stop taking work, drain, stop the loops."""
        grace = self.config.grace_seconds
        await self._health.enter_graceful_shutdown()
        if self.directory_sync is not None:
            # First, while tunnels are up: a pass cut here resumes from its watermark.
            await self.directory_sync.shutdown()
        if self.order_parts is not None:
            # Work in flight stops here; its intents are written, so it resumes at the next start.
            await self.order_parts.shutdown()
        if self.gateway is not None:
            await self.gateway.shutdown(grace)
        for server in self._servers:
            await self._stop_server(server, grace)
        for part in (self.revocations, self._sync, self._census_flusher):
            if part is not None:
                await part.shutdown()
        if self._supervisor is not None:
            await self._supervisor

    async def _known_hospital(self, hospital_id: str) -> bool:
        """Whether a hospital id is one of the platform's (a credential was ever issued)."""
        assert self.credentials is not None
        return bool(await self.credentials.list(hospital_id))

    async def _online(self, hospital_ids: Sequence[str]) -> set[str]:
        """Which of these hospitals have a tunnel up on any node (``online_booking_available``)."""
        assert self.gateway is not None
        assert self.presence is not None
        here = {h for h in hospital_ids if any(s.accepting_calls for s in self.gateway.sessions(h))}
        elsewhere = [h for h in hospital_ids if h not in here]
        try:
            found = await asyncio.gather(*(self.presence.lookup(h) for h in elsewhere))
        except PresenceUnavailable:
            return here
        return here | {h for h, records in zip(elsewhere, found, strict=True) if records}

    async def _edges_on_release(self, version: str) -> int:
        """How many edges (of any node) currently announce ``version`` (blocks retiring)."""
        assert self.presence is not None
        records = await self.presence.all()
        return len({(r.hospital_id, r.edge_id) for r in records if r.contract_release == version})

    async def _check_release(
        self, hello: tunnel_pb2.Hello, welcome: tunnel_pb2.Welcome
    ) -> status_pb2.Status | None:
        """Check an edge's contract release against the registry.

        Unknown or retired: refused. Deprecated or outside the compat window: accepted with
        a warning. With an empty registry (a new embedded node) there is nothing to check
        against, so every release is accepted.
        """
        assert self._releases is not None
        version = hello.contract_release
        if not await self._releases.has_releases():
            return None
        status = await self._releases.status(version)
        if status is ReleaseStatus.UNKNOWN:
            return status_pb2.Status(
                code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                message=f"contract release {version!r} is unknown to the registry",
            )
        if status is ReleaseStatus.RETIRED:
            return status_pb2.Status(
                code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                message=f"contract release {version} is retired: upgrade this front-end server",
            )
        if status is ReleaseStatus.DEPRECATED:
            welcome.warnings.append(f"contract release {version} is deprecated")
        if not await self._releases.in_window(version):
            welcome.warnings.append(
                f"contract release {version} is outside the compat window: "
                "upgrade this front-end server"
            )
        return None

    async def shutdown(self) -> None:
        """Drain: go-away to every edge, let calls finish within the grace period, stop.

        Then closes what the node opened, in the reverse order of its start.
        """
        if self._closed or self._supervisor is None:
            return
        await self._close()
        log.info("node %s stopped", self.config.node_id)

    async def _close(self) -> None:
        self._closed = True
        try:
            await self._stack.aclose()
        finally:
            self._stopped.set()

    async def wait(self) -> None:
        """Return once the node has shut down."""
        await self._stopped.wait()

    async def __aenter__(self) -> CloudNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


# Edges hold idle tunnels for hours: accept their keepalive pings (every 20 s) without data.
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


async def serve(config: NodeConfig, *, on_ready: Callable[[CloudNode], None] | None = None) -> None:
    """Run a cloud node until SIGINT or SIGTERM, then shut it down gracefully.

    Args:
        config: the node's configuration.
        on_ready: called once the node listens (the CLI prints where to look).
    """
    loop = asyncio.get_running_loop()
    async with CloudNode(config) as node:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                on_ready(node)
            failed = asyncio.ensure_future(node.failed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (failed, stopped):
                waiter.cancel()
            if stop.is_set():
                log.info("signal received: draining for up to %.0fs", config.grace_seconds)
            else:
                log.error("a background loop failed: shutting the node down")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
