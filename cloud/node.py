"""The cloud node's composition root: one ``serve(config)`` builds and runs everything.

Each service is built here from the one ``NodeConfig`` and registered with its generated
``add_*_to_server``. A service that is not implemented is not registered, so reflection
lists only what really answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.accounts import Accounts, InProcessBuckets, LogCodeSender, RedisBuckets
from cloud.attribution import (
    ERRORS_FIELD,
    FailureRecorder,
    FailureStore,
    errors_by_owner,
    migrate_attribution,
)
from cloud.census import (
    CensusFlusher,
    CensusStore,
    FieldCensus,
    census_answer,
    migrate_census,
)
from cloud.config import NodeConfig, TlsMode, parse_listen
from cloud.dashboard import Column, Dashboard, Overview
from cloud.db import create_engine
from cloud.edge_api import (
    EdgeApiServicer,
    EdgeAuth,
    EdgeCaller,
    EdgeHandlers,
    TaskResultsHandler,
)
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
from cloud.monitoring import HealthMonitor, Prober, migrate_monitoring
from cloud.operations import OperationsServicer
from cloud.orders import Orders, OrdersLedger
from cloud.partitioned import SCHEMAS as PARTITIONED
from cloud.partitions import PartitionSet
from cloud.patient_api import OrderApi, PageTokens, PatientApiServicer, ReadCache
from cloud.payments import NotifyServer, PaymentChannel, open_payments
from cloud.presence import InProcessPresence, Presence, PresenceUnavailable, RedisPresence
from cloud.readstore import ReadStore
from cloud.reconcile import (
    PlatformLedger,
    Reconciler,
    ResolutionSink,
    migrate_reconcile,
)
from cloud.registry import MAX_MESSAGE_BYTES as REGISTRY_MAX_MESSAGE_BYTES
from cloud.registry import ReleaseResolver, ReleaseStatus, build_registry
from cloud.reports import KEY_PREFIX as REPORT_KEY_PREFIX
from cloud.reports import ReportApi, migrate_reports
from cloud.sync import RouterSource, SyncEngine
from cloud.traces import NodeSpanStore, TraceLookup, migrate_traces
from cloud.upgrades import PackageStore, Rollouts, UpgradeHandlers, migrate_upgrades
from hplus.cloud.v1 import (
    account_pb2,
    account_pb2_grpc,
    edge_pb2,
    edge_pb2_grpc,
    operations_pb2_grpc,
    patient_pb2,
    patient_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from hplus.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc
from mesh.files import make_private_dir
from mesh.observability import (
    MetricsServer,
    ServerObservability,
    Tracing,
    TunnelClientHook,
    client_interceptors,
    watch_gateway,
)
from mesh.packages import TrustRoot
from mesh.tls import TlsFiles, ensure_dev_pki, load_server_credentials
from mesh.tunnel import TunnelConfig, TunnelGateway, bearer_token

__all__ = ["CloudNode", "serve"]

log = logging.getLogger(__name__)


class CloudNode:
    """A running cloud node: its public, registry and internal ``grpc.aio`` servers.

    Public endpoint (``listen``): health, reflection, ``TunnelService`` (edges dial in) and
    the patient API's ``AccountService`` (accounts live in the business partitions) and
    ``PatientApiService`` (reads from the read store; orders and reports delegated), with
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
        self.dashboard: Dashboard | None = None
        self.order_parts: Orders | None = None
        self.directory_sync: SyncEngine | None = None
        self.health: HealthMonitor | None = None
        self.reports: ReportApi | None = None
        self.probes: Prober | None = None
        self._edge_api: EdgeApiServicer | None = None
        self.packages: PackageStore | None = None
        self.upgrades: UpgradeHandlers | None = None
        self.orders: OrderApi | None = None
        """The patient API's orders part: set before the servicer is built in `_start`."""
        self.patient_api: PatientApiServicer | None = None
        self.payments: PaymentChannel | None = None
        """The payment channel (``[payments]``), or None when none is configured."""
        self.payment_notify: NotifyServer | None = None
        """Its notification endpoint (``[payments] notify_listen``)."""
        self.reconciler: Reconciler | None = None
        self.platform_ledger: PlatformLedger | None = None
        """The platform's side of reconciliation; set by the order coordinator's wiring."""
        self.resolutions: ResolutionSink | None = None
        """Where reconciliation's exact resolutions go; set by the order coordinator's wiring."""
        self._health = health.aio.HealthServicer()
        self._service_names: list[str] = []
        self._registry_service_names: list[str] = []
        self._stopped = asyncio.Event()
        self.tracing: Tracing | None = None
        self.spans: NodeSpanStore | None = None
        self.trace_lookup: TraceLookup | None = None
        self.failures: FailureRecorder | None = None
        """Failed calls, attributed to their owners (``hplus cloud errors``)."""
        self.metrics: MetricsServer | None = None
        """The ``/metrics`` endpoint, when ``observability.metrics_listen`` is set."""

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

        # Observability (spans in the node's database, RPC metrics, /metrics): built before
        # the servers, whose interceptors and the gateway's hooks use it.
        tracing = await self._observe(stack)
        # Every failed call (served, or made to an edge) attributed to its owner, in the
        # fleet database that every node shares (hplus cloud errors reads it there).
        await migrate_attribution(fleet_engine)
        self.failures = FailureRecorder(FailureStore(fleet_engine), node=cfg.node_id)
        failures = self.failures

        def observing(**kw: Any) -> list[grpc.aio.ServerInterceptor]:
            return [ServerObservability(tracing, **kw)] if tracing is not None else []

        # The internal endpoint binds first: its port goes into presence records.
        internal = self._server_for(
            interceptors=[*observing(), InternalAuthInterceptor(secret)],
            options=[("grpc.so_reuseport", 0)],
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
            hooks=[
                *([TunnelClientHook(tracing)] if tracing is not None else []),
                *([self.census] if cfg.census_rate > 0 else []),
                failures.hook(),
            ],
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
            peer_interceptors=None
            if tracing is None
            else lambda address: client_interceptors(tracing, peer=address),
        )
        stack.push_async_callback(self.router.close)
        self.readstore = readstore = await ReadStore.open(
            cfg.readstore_url,
            replica_urls=cfg.readstore_replica_urls,
            max_replica_lag=cfg.sync.max_replica_lag,
            replica_check_interval=cfg.sync.replica_check_interval,
            online=self._online,
        )
        stack.push_async_callback(readstore.close)
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
        await self._start_edge_api(fleet_engine)
        # Payments ([payments]): the channel client and its notification endpoint; the
        # three-way reconciliation ([reconcile]) over it, stored in the control database.
        if cfg.payments.enabled:
            self.payments, self.payment_notify = await stack.enter_async_context(
                open_payments(cfg.payments, tls=self.tls)
            )
        await migrate_reconcile(self.partitions.control)
        self.reconciler = Reconciler(
            self.partitions.control,
            channel=self.payments,
            channel_for=self.router.channel_for,
            hospitals=self._hospital_ids,
            platform=lambda: self.platform_ledger,
            resolutions=lambda: self.resolutions,
            hospital_timeout=cfg.reconcile.hospital_timeout,
        )
        # Orders: the coordinator (its resume loop runs below, supervised) and the API the
        # patient API's servicer delegates BookAppointment, PayOrder, ... to.
        self.order_parts = Orders(
            self.partitions,
            channel_for=self.router.channel_for,
            channel=self.payments,
            patients=self.accounts.patients.at_hospital,
            config=cfg.orders,
            node_id=cfg.node_id,
            fees=readstore.queries.slot_fee,
        )
        self.orders = self.order_parts.api
        # Reconciliation's platform side, and where its exact resolutions go.
        ledger = OrdersLedger(self.order_parts.store, self.order_parts.coordinator)
        self.platform_ledger = ledger
        self.resolutions = ledger

        health_pb2_grpc.add_HealthServicer_to_server(self._health, internal)
        # One trace lookup: LookupTrace (hplus trace) and the dashboard's trace page.
        self.trace_lookup = (
            None
            if self.spans is None
            else TraceLookup(
                self.spans,
                presence=self.presence,
                router=self.router,
                node_id=cfg.node_id,
                secret=secret,
            )
        )
        operations_pb2_grpc.add_OperationsServiceServicer_to_server(
            OperationsServicer(
                self.presence,
                credentials=store,
                revocations=self.revocations,
                gateway=self.gateway,
                traces=self.trace_lookup,
                reconcile=self.reconciler.answer,
            ),
            internal,
        )
        stack.callback(watch_gateway(self.gateway, node_id=cfg.node_id))
        internal.add_generic_rpc_handlers([ForwardHandler(self.gateway, self.router)])

        # The public endpoint carries tunnels: its message limit is the tunnel's, so one
        # outer message cannot make the node parse (and hold) more than that.
        tunnel_limit = self._tunnel_config.max_inbound_outer_message_bytes
        server = self._server_for(
            interceptors=[*observing(return_request_id=True), failures.interceptor()],
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
        assert self._edge_api is not None
        edge_pb2_grpc.add_EdgeServiceServicer_to_server(self._edge_api, server)
        # The patient API: reads from the read store (page tokens signed with a key derived
        # from the cluster secret, so any node continues a list another began); orders and
        # reports go to `self.orders` / `self.reports` (UNIMPLEMENTED while they are None).
        self.patient_api = PatientApiServicer(
            auth=self.accounts.auth,
            queries=self.readstore.queries,
            tokens=PageTokens(secret),
            cache=ReadCache(
                ttl=cfg.patient_api.read_cache_seconds,
                max_entries=cfg.patient_api.read_cache_entries,
                weigh=patient_pb2.ListSlotsResponse.ByteSize,
            ),
            orders=self.orders,
            reports=self.reports,
        )
        patient_pb2_grpc.add_PatientApiServiceServicer_to_server(self.patient_api, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        self._service_names = [
            health_name,
            tunnel_pb2.DESCRIPTOR.services_by_name["TunnelService"].full_name,
            account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
            edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name,
            patient_pb2.DESCRIPTOR.services_by_name["PatientApiService"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(self._service_names, server)
        self.port = self._bind(server, cfg.listen)

        # Release images travel whole in PushRelease/GetRelease (up to 32 MiB): the registry
        # has a server of its own with that limit.
        registry_server = self._server_for(
            interceptors=observing(),
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
        if cfg.dashboard_listen is not None:
            overview = Overview(
                presence=self.presence,
                readstore=self.readstore,
                credentials=self.credentials,
            )
            if self.health is not None:
                # An edge that is up but reports its HIS unreachable turns its row degraded,
                # the alert naming why.
                overview.add_source(
                    "edge health",
                    self.health.dashboard_fields,
                    [Column("edge_health", "edge health"), Column("edge_alerts", "edge alerts")],
                )
            self._add_error_columns(overview)
            self.dashboard = Dashboard(
                overview,
                data_dir=cfg.data_dir,
                refresh_seconds=cfg.dashboard_refresh_seconds,
                node_id=cfg.node_id,
                traces=self.trace_lookup,
            )
            stack.push_async_callback(self.dashboard.close)
            host, port = parse_listen(cfg.dashboard_listen)
            await self.dashboard.start(host, port, self._https())
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("presence-heartbeat", self._sync.run),
            ("revocations", self.revocations.run),
            ("census-flush", self._census_flusher.run),
            ("failures", failures.run),
        ]
        if self.directory_sync is not None:
            loops.append(("readstore-sync", self.directory_sync.run))
        assert self.reports is not None
        loops.append(("reports-purge", self.reports.run))
        if self.probes is not None:
            loops.append(("probes", self.probes.run))
        daily_at = cfg.reconcile.daily_time
        if self.payments is not None and daily_at is not None:
            loops.append(("reconcile-daily", functools.partial(self.reconciler.daily, daily_at)))
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

    def _add_error_columns(self, overview: Overview) -> None:
        """The overview's (and hospital page's) "errors by owner" column."""
        if self.failures is not None:
            overview.add_source(
                "errors by owner",
                errors_by_owner(self.failures.store),
                [Column(ERRORS_FIELD, "errors by owner (1 h)")],
            )

    def _https(self) -> ssl.SSLContext | None:
        """The server TLS context of the node's HTTP listeners (None: plaintext)."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        return context

    async def _observe(self, stack: contextlib.AsyncExitStack) -> Tracing | None:
        """The node's tracing (spans kept in its database) and its ``/metrics`` endpoint."""
        cfg = self.config
        obs = cfg.observability
        if obs.metrics_listen:
            self.metrics = MetricsServer(obs.metrics_listen, token_file=obs.metrics_token_file)
            await self.metrics.start()
            stack.push_async_callback(self.metrics.stop)
        if not obs.enabled:
            return None
        engine = create_engine(cfg.traces_url)
        stack.push_async_callback(engine.dispose)
        await migrate_traces(engine)
        self.spans = NodeSpanStore(
            engine, max_spans=obs.max_spans, retention=obs.span_retention_seconds
        )
        self.tracing = Tracing(
            service="hplus-node",
            node=cfg.node_id,
            sink=self.spans,
            otlp_endpoint=obs.otlp_endpoint,
            sample_rate=obs.span_sample_rate,
        )
        self.tracing.start()
        stack.push_async_callback(self.tracing.shutdown)
        return self.tracing

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
        for part in (
            self.revocations,
            self._sync,
            self._census_flusher,
            self.reports,
            self.probes,
            self.reconciler,
            self.failures,
        ):
            if part is not None:
                await part.shutdown()
        if self._supervisor is not None:
            await self._supervisor

    async def _start_edge_api(self, fleet_engine: AsyncEngine) -> None:
        """EdgeService with what rides on it: edge health, report lookups, probes."""
        cfg = self.config
        assert self.credentials is not None
        assert self.router is not None
        assert self.accounts is not None
        await migrate_monitoring(fleet_engine)
        self.health = HealthMonitor(
            fleet_engine, cfg.health, report_interval=cfg.edge_api.report_interval
        )
        reports_engine = create_engine(cfg.reports_url)
        self._stack.push_async_callback(reports_engine.dispose)
        await migrate_reports(reports_engine)
        self.reports = ReportApi(
            reports_engine, self.accounts.patients, self.router.channel_for, cfg.reports
        )
        if cfg.probes.enabled:
            self.probes = Prober(
                fleet_engine,
                cfg.probes,
                hospitals=self._probed_hospitals,
                channel_for=self.router.channel_for,
            )
        results = TaskResultsHandler({REPORT_KEY_PREFIX: self.reports.on_result}, cfg.edge_api)
        await migrate_upgrades(fleet_engine)
        trust = TrustRoot.load(cfg.upgrades.trusted_roots) if cfg.upgrades.trusted_roots else None
        self.packages = PackageStore(
            fleet_engine,
            cfg.data_dir / "upgrades",
            trust=trust,
            max_delta_bases=cfg.upgrades.max_delta_bases,
        )
        self.upgrades = UpgradeHandlers(self.packages, Rollouts(fleet_engine), cfg.upgrades)
        upgrades, health = self.upgrades, self.health

        async def report_health(
            caller: EdgeCaller, request: edge_pb2.ReportHealthRequest
        ) -> edge_pb2.ReportHealthResponse:
            response = await health.report(caller, request)
            # The report also carries the edge's upgrade state (its rollout's evidence).
            response.upgrade_available = await upgrades.record_health(request, caller.hospital_id)
            return response

        async def get_upgrade_manifest(
            caller: EdgeCaller, request: edge_pb2.GetUpgradeManifestRequest
        ) -> edge_pb2.GetUpgradeManifestResponse:
            return await upgrades.get_upgrade_manifest(request, caller.hospital_id)

        def download_upgrade(
            caller: EdgeCaller, request: edge_pb2.DownloadUpgradeRequest
        ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
            return upgrades.download_upgrade(request, caller.hospital_id)

        self._edge_api = EdgeApiServicer(
            EdgeAuth(
                self.credentials.authenticate,
                self.accounts.buckets,
                calls_per_minute=cfg.edge_api.calls_per_minute,
                edge_owner=self.health.owners,
            ),
            EdgeHandlers(
                report_task_results=results.handle,
                report_health=report_health,
                get_upgrade_manifest=get_upgrade_manifest,
                download_upgrade=download_upgrade,
            ),
            cfg.edge_api,
        )

    async def _probed_hospitals(self) -> list[str]:
        """Hospitals whose tunnels this node holds, and those with configured probe cases."""
        assert self.gateway is not None
        held = {s.hello.hospital_id for s in self.gateway.sessions() if s.accepting_calls}
        return sorted(held | set(self.config.probes.hospitals))

    async def _hospital_ids(self) -> list[str]:
        """Every hospital a credential was ever issued to (asked for its ledger daily)."""
        assert self.credentials is not None
        return sorted({c.hospital_id for c in await self.credentials.list()})

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
