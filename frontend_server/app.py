"""The front-end server's composition root: one hospital's edge, from its profile.

:class:`EdgeApp` builds everything the edge runs from an :class:`EdgeConfig` and owns it:

* the HIS adapter of the profile's dialect (settings derived from the profile), its
  real-time calls paced by the profile's ``his.limits``;
* the idempotency ledger (``ledger.db``) and the pending-task queue (``tasks.db``) in the
  data directory, the queue draining against the HIS at the profile's rate; both checked
  at start against the directory's identity record (a damaged, missing, emptied or swapped
  store refuses the start with :class:`StoreRefused`), and reported in GetEdgeInfo's
  components (a store found damaged while running fails its calls with DATA_LOSS);
* the resolver that settles UNKNOWN writes in the background;
* the directory mirror (``directory.db``) and its refresher, which serve the change feed;
* the tunnel registrar with every hospital servicer and the admin servicer; the
  profile-dependent parts (adapter, limits, rules, servicers) are swapped whole when a
  profile is applied live (:mod:`frontend_server.liveconfig`), the rest stays;
* the dialer that holds the tunnels to the cloud (optional: tests may serve the registrar
  another way), and the uplink that pushes task results and health reports to the cloud's
  ``EdgeService`` over the same address, TLS and credential (with the dialer);
* the HIS check behind GetEdgeInfo's ``his`` component and the health report.

Without a profile (``hplus edge run`` without ``--profile``) the edge serves only the
admin service through its tunnels: no HIS, no stores.

Use ``async with EdgeApp(config) as app:`` (runs until the block ends), or ``await
app.run()`` and ``await app.shutdown()`` from another task. Shutdown drains the tunnels
first (no new calls), then stops the queue (running attempts get a grace period and go
back to QUEUED), the resolver, closes the stores and the adapter, and records the clean
stop in the identity record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import socket
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from frontend_server._datadir import IDENTITY_FILE, DataDir, StoreRefused, StoreSlot
from frontend_server.adapters import HisAdapter, make_adapter
from frontend_server.admin import EdgeAdminServicer
from frontend_server.dialer import Dialer, DialerConfig
from frontend_server.directory import DirectoryMirror
from frontend_server.ledger import LEDGER_STORE, Ledger, Resolver
from frontend_server.liveconfig import ConfigStore, HealthFailure, LiveConfig
from frontend_server.profile import OperationMode, Profile
from frontend_server.services import (
    DirectoryConfig,
    DirectoryRefresher,
    Hospital,
    SlotIndex,
    WriteRunner,
    dialect_settings,
    paced,
    register_hospital_services,
    task_executor,
)
from frontend_server.slots import Slots, SlotsBridge
from frontend_server.tasks import TASK_STORE, TaskQueue, TaskRun, TaskStore, TaskStoreDamaged
from frontend_server.traces import SpanRing, observed
from frontend_server.updater import UpdaterConfig, UpgradeAgent
from frontend_server.uplink import HisCheck, Uplink, UplinkConfig
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from mesh.observability import MetricsServer, ObservabilityConfig, Tracing, TunnelServerHook
from mesh.packages import TrustRoot
from mesh.tunnel import TunnelServer
from mesh.version import SOFTWARE_VERSION

__all__ = [
    "IDENTITY_FILE",
    "RESETTABLE_STORES",
    "DataDir",
    "EdgeApp",
    "EdgeConfig",
    "StoreRefused",
    "StoreSlot",
]

log = logging.getLogger(__name__)


RESETTABLE_STORES = frozenset({LEDGER_STORE.name, TASK_STORE.name})
"""Names of the stores :attr:`EdgeConfig.reset_stores` may name."""


def _wall_clock() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """What one edge process runs."""

    profile: Profile | None
    """The hospital's validated profile (HIS, rules, queue settings); ``None`` serves only
    the admin service (no HIS, no stores)."""
    data_dir: Path | None = None
    """Directory of the edge's local stores (created if missing); required with a profile."""
    hospital_id: str = ""
    """The hospital served; default: the profile's (required without one)."""
    dialer: DialerConfig | None = None
    """Where to dial out; ``None`` serves no tunnel (the registrar is still built)."""
    edge_id: str = ""
    """This edge's id; default: the dialer's, else host name + random suffix."""
    adapter_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Adapter settings beyond the profile (e.g. a DB HIS's ``table_prefix``)."""
    resolve_interval_seconds: float = 30.0
    """Pause between background rounds of resolving UNKNOWN writes."""
    grace_seconds: float = 5.0
    """How long in-flight calls and task attempts may finish at shutdown."""
    clock: Callable[[], datetime.datetime] = _wall_clock
    """The current time, timezone-aware, for the appointment rules (a seam for tests)."""
    reset_stores: frozenset[str] = frozenset()
    """Stores (``"ledger"``, ``"tasks"``) to archive and begin anew *if* they fail the start
    checks; a store that passes them is kept."""
    directory: DirectoryConfig = dataclasses.field(default_factory=DirectoryConfig)
    """How the directory mirror is refreshed and the change feed paged."""
    upgrade_roots: tuple[Path, ...] = ()
    """Root public keys upgrade packages must be certified under; with them (and a
    profile and a dialer) the edge runs its upgrade agent (``frontend_server.updater``),
    which installs into the A/B slots and switches through the supervisor."""
    uplink: UplinkConfig = dataclasses.field(default_factory=UplinkConfig)
    """How task results and health reports reach the cloud's ``EdgeService`` (over the
    dialer's address, TLS and credential; only with a dialer)."""
    config_health_seconds: float = 10.0
    """Deadline of the health gate of a profile applied live (ApplyConfig, RollbackConfig)."""
    config_history: int = 20
    """Profiles kept in the history under ``DATA_DIR/config``."""
    observability: ObservabilityConfig = dataclasses.field(default_factory=ObservabilityConfig)
    """``/metrics`` endpoint, span ring bounds (``max_spans``, ``span_retention_seconds``),
    OTLP export."""

    def __post_init__(self) -> None:
        if self.profile is not None:
            if self.hospital_id and self.hospital_id != self.profile.hospital_id:
                raise ValueError(
                    f"hospital: the profile configures {self.profile.hospital_id!r}, "
                    f"not {self.hospital_id!r}"
                )
            object.__setattr__(self, "hospital_id", self.profile.hospital_id)
            if self.data_dir is None:
                raise ValueError("data_dir: required with a profile (the ledger lives there)")
        elif not self.hospital_id:
            raise ValueError("hospital_id: required without a profile")
        elif self.reset_stores:
            raise ValueError("reset_stores: an edge without a profile keeps no stores")
        if self.dialer is not None and self.dialer.hospital_id != self.hospital_id:
            raise ValueError(
                f"hospital: the edge serves {self.hospital_id!r}, "
                f"the dialer dials as {self.dialer.hospital_id!r}"
            )
        if not self.resolve_interval_seconds > 0:
            raise ValueError("resolve_interval_seconds must be > 0")
        if self.grace_seconds < 0:
            raise ValueError("grace_seconds must be >= 0")
        if not self.config_health_seconds > 0:
            raise ValueError("config_health_seconds must be > 0")
        if self.config_history < 2:
            raise ValueError("config_history must be >= 2")
        unknown = set(self.reset_stores) - RESETTABLE_STORES
        if unknown:
            raise ValueError(f"reset_stores: unknown store(s) {', '.join(sorted(unknown))}")
        object.__setattr__(
            self, "adapter_overrides", MappingProxyType(dict(self.adapter_overrides))
        )


class _ProfileParts:
    """The parts built from one profile, swapped whole when a profile is applied live.

    The HIS adapter (paced by the profile's limits), the task executor over it, the
    hospital servicers (registered on a registrar of their own: the edge's server routes to
    the active profile's, see :mod:`frontend_server.liveconfig`) and their write probes.

    Raises:
        ConfigError: a parameter the adapter refuses (``dialect_settings``).
    """

    components = ("his-adapter", "appointments", "billing", "reports", "patients", "tasks")

    def __init__(self, edge: EdgeConfig, profile: Profile, shared: _Hospital) -> None:
        self.profile = profile
        self._shared = shared
        self._clock = edge.clock
        adapter = make_adapter(dialect_settings(profile, **edge.adapter_overrides))
        self.adapter: HisAdapter = (
            adapter
            if shared.tracing is None
            else observed(adapter, shared.tracing, edge_id=shared.edge_id)
        )
        # Real-time calls are paced by his.limits, and so are the mirror's reads; the queue
        # paces its own drain.
        self.his = paced(self.adapter, profile.his.limits)
        self.executor = task_executor(self.adapter)
        self.zone = zoneinfo.ZoneInfo(profile.business_hours.timezone)

    def register(self) -> _ProfileParts:
        """Builds the servicers over these parts (once the shared refresher exists)."""
        shared, profile = self._shared, self.profile
        self.hospital = Hospital(
            profile=profile,
            adapter=self.his,
            writes=shared.writes,
            queue=shared.queue,
            clock=self._clock,
            directory=shared.refresher,
            slots=shared.slots,
        )
        self.registrar = TunnelServer()
        # The servicers register their write probes on the shared runner: keep theirs
        # aside, and leave the active profile's in place until these become active.
        active = shared.writes.probe_table()
        register_hospital_services(self.registrar, self.hospital)
        self.probes = shared.writes.probe_table()
        if active:
            shared.writes.use_probes(active)
        return self

    async def check(self) -> None:
        """The HIS answers a directory read through this profile's adapter settings."""
        try:
            await self.his.list_departments()
        except Exception as err:  # any failure is the answer of the check
            raise HealthFailure("his-adapter", f"{type(err).__name__}: {err}") from err

    def activate(self) -> None:
        """Points the queue, the refresher and the write probes at these parts."""
        shared = self._shared
        shared.writes.use_probes(self.probes)
        shared.refresher.retarget(self.his, self.zone)
        shared.queue.reconfigure(self.profile.tasks)

    async def aclose(self) -> None:
        await self.adapter.aclose()


class _Hospital:
    """The parts an edge builds from its profile.

    Long-lived (the profile does not change them): the stores, the queue, the resolver, the
    directory mirror and its refresher. Per profile (:class:`_ProfileParts`, swapped by
    :class:`LiveConfig` when a profile is applied live): the HIS adapter and the hospital
    servicers, routed on ``server``.
    """

    def __init__(
        self,
        config: EdgeConfig,
        profile: Profile,
        data_dir: Path,
        server: TunnelServer,
        *,
        tracing: Tracing | None,
        edge_id: str,
    ) -> None:
        # Nothing touches the data directory before start() has checked it.
        self.data = DataDir(
            data_dir,
            hospital_id=profile.hospital_id,
            stores=[StoreSlot(LEDGER_STORE, "ledger.db"), StoreSlot(TASK_STORE, "tasks.db")],
        )
        # Each profile's adapter is wrapped in a span per HIS call (its _ProfileParts).
        self.tracing = tracing
        self.edge_id = edge_id
        self.ledger = Ledger.open(self.data.store_path(LEDGER_STORE.name))
        self.task_store = TaskStore.open(self.data.store_path(TASK_STORE.name))
        self.queue = TaskQueue(self.task_store, self._execute, profile.tasks, owns_store=True)
        self.writes = WriteRunner(self.ledger)
        self.resolver = Resolver(
            self.ledger, self.writes.probe, interval_seconds=config.resolve_interval_seconds
        )
        self.slots = SlotIndex()
        directory = config.directory
        self.mirror = DirectoryMirror(
            data_dir / "directory.db",
            history_seconds=directory.history_seconds,
            tombstone_seconds=directory.tombstone_seconds,
            max_entities=directory.max_entities,
        )
        first = _ProfileParts(config, profile, self)
        self.refresher = DirectoryRefresher(
            self.mirror, first.his, zone=first.zone, config=directory, clock=config.clock
        )
        first.register().activate()
        self.live = LiveConfig(
            server=server,
            first=first,
            build=lambda candidate: _ProfileParts(config, candidate, self).register(),
            store=ConfigStore(data_dir / "config", limit=config.config_history),
            health_seconds=config.config_health_seconds,
            drain_seconds=max(config.grace_seconds, 30.0),
            post_checks=self._problems,
        )
        self.his_check = HisCheck(
            lambda: self.adapter,
            dialect=profile.his.dialect.value,
            slow_seconds=config.uplink.his_slow_seconds,
            timeout=config.uplink.his_timeout,
        )
        self._reset = config.reset_stores

    async def _execute(self, run: TaskRun) -> bytes:
        """The queue's executor: the active profile's, counted as a call on it."""
        with self.live.using() as parts:
            assert isinstance(parts, _ProfileParts)
            return await parts.executor(run)

    def _problems(self) -> list[str]:
        return [f"{name}: {damage}" for name, damage in self.damage().items() if damage]

    @property
    def profile(self) -> Profile:
        """The active profile."""
        return self.live.profile

    @property
    def parts(self) -> _ProfileParts:
        """The active profile's parts."""
        parts = self.live.parts
        assert isinstance(parts, _ProfileParts)
        return parts

    @property
    def adapter(self) -> HisAdapter:
        """The active profile's HIS adapter."""
        return self.parts.adapter

    @property
    def hospital(self) -> Hospital:
        """The active profile's servicers' collaborators."""
        return self.parts.hospital

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Checks the data directory and opens the stores; ``stack`` closes them in reverse.

        The adapter closes last and the identity record notes the clean stop after every
        store has closed.
        """
        stack.push_async_callback(self.live.aclose)
        await asyncio.to_thread(self.data.open, reset=self._reset)
        await self.live.open()
        stack.push_async_callback(self._record_clean_stop)
        stack.push_async_callback(self.mirror.aclose)
        stack.push_async_callback(self.ledger.aclose)
        stack.push_async_callback(self.queue.aclose)
        recovered = await self.ledger.start()
        if recovered:
            log.warning("%d write(s) were in flight at the last stop: now UNKNOWN", recovered)
        await self.queue.start()
        await self.mirror.open()

    async def _record_clean_stop(self) -> None:
        damaged = [name for name, damage in self.damage().items() if damage]
        await asyncio.to_thread(self.data.record_clean_stop, damaged=damaged)

    def start_tasks(self, group: asyncio.TaskGroup) -> None:
        """Starts the queue, the resolver and (when the feed is offered) the refresher."""
        group.create_task(self._run_queue(), name="edge-queue")
        group.create_task(self.resolver.run(), name="edge-resolver")
        if self.profile.mode("get_changes") is not OperationMode.UNSUPPORTED:
            group.create_task(self.refresher.run(), name="edge-directory")

    async def _run_queue(self) -> None:
        try:
            await self.queue.run()
        except* TaskStoreDamaged:
            # Logged where it was found. Only the queue stops: the other services go on,
            # and GetEdgeInfo reports the store NOT_SERVING.
            pass

    async def stop(self, grace_seconds: float) -> None:
        """Stops the queue (running attempts get ``grace_seconds``), resolver, refresher."""
        await self.queue.shutdown(grace_seconds=grace_seconds)
        await self.resolver.shutdown()
        await self.refresher.shutdown()

    def damage(self) -> dict[str, str | None]:
        """Each store's damage found while running (``None``: healthy)."""
        return {
            LEDGER_STORE.name: self.ledger.damage,
            TASK_STORE.name: self.task_store.damage,
        }


class EdgeApp:
    """One hospital's front-end server (see the module docstring).

    Args:
        config: what to run.
    """

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.edge_id = (
            config.edge_id
            or (config.dialer.edge_id if config.dialer is not None else "")
            or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        )
        # Spans of every call (kept in a ring buffer in the data directory, opened at start)
        # and the RPC metrics: the tunnel server's hook makes the caller's trace current.
        obs = config.observability
        self.spans = SpanRing(
            config.data_dir / "traces.db" if config.data_dir is not None else None,
            capacity=obs.max_spans,
            retention=obs.span_retention_seconds,
        )
        self.tracing = Tracing(
            service="hplus-edge",
            node=self.edge_id,
            sink=self.spans,
            otlp_endpoint=obs.otlp_endpoint,
            sample_rate=obs.span_sample_rate,
        )
        self.metrics: MetricsServer | None = None
        self.server = TunnelServer(hooks=[TunnelServerHook(self.tracing)] if obs.enabled else [])
        profile = config.profile
        self._parts: _Hospital | None = None
        if profile is not None:
            assert config.data_dir is not None  # EdgeConfig checks it
            self._parts = _Hospital(
                config,
                profile,
                config.data_dir,
                self.server,
                tracing=self.tracing if obs.enabled else None,
                edge_id=self.edge_id,
            )
        admin_pb2_grpc.add_EdgeAdminServiceServicer_to_server(
            EdgeAdminServicer(
                hospital_id=config.hospital_id,
                edge_id=self.edge_id,
                services=lambda: self.server.services,
                components=self.components,
                profile=profile,
                queue_stats=self._parts.queue.stats if self._parts is not None else None,
                live=self._parts.live if self._parts is not None else None,
                spans=self.spans if obs.enabled else None,
            ),
            self.server,
        )
        self.dialer = Dialer(config.dialer, self.server) if config.dialer is not None else None
        self.uplink: Uplink | None = None
        """Task results and health reports to the cloud (with a dialer)."""
        if config.dialer is not None and self.dialer is not None:
            parts = self._parts
            self.uplink = Uplink(
                config.dialer,
                config.uplink,
                edge_id=self.edge_id,
                queue=parts.queue if parts is not None else None,
                his=parts.his_check if parts is not None else None,
                tunnels=lambda: self.dialer.slots if self.dialer is not None else [],
                damage=parts.damage if parts is not None else dict,
                data_dir=config.data_dir,
                upgrade=lambda: None if self.updater is None else self.updater.upgrade_health(),
            )
        self.updater: UpgradeAgent | None = None
        """The upgrade agent (with ``upgrade_roots``, a profile and a dialer)."""
        if self.uplink is not None and config.upgrade_roots and config.data_dir is not None:
            assert config.profile is not None  # a data dir comes with a profile
            self.updater = UpgradeAgent(
                UpdaterConfig(
                    edge_id=self.edge_id,
                    data_dir=config.data_dir,
                    trust=TrustRoot.load(config.upgrade_roots),
                    zone=zoneinfo.ZoneInfo(config.profile.business_hours.timezone),
                ),
                self.uplink,
                SlotsBridge(Slots(config.data_dir, base_version=SOFTWARE_VERSION)),
            )
        self._started = False
        self._stack = contextlib.AsyncExitStack()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # The profile's parts, for callers (and tests) that reach into a running edge.

    @property
    def _hospital_parts(self) -> _Hospital:
        if self._parts is None:
            raise AttributeError("this edge runs without a profile: no HIS, no stores")
        return self._parts

    @property
    def data(self) -> DataDir:
        """The data directory and its identity record."""
        return self._hospital_parts.data

    @property
    def adapter(self) -> HisAdapter:
        """The HIS adapter of the profile's dialect."""
        return self._hospital_parts.adapter

    @property
    def ledger(self) -> Ledger:
        """The idempotency ledger."""
        return self._hospital_parts.ledger

    @property
    def task_store(self) -> TaskStore:
        """The pending-task store."""
        return self._hospital_parts.task_store

    @property
    def queue(self) -> TaskQueue:
        """The pending-task queue."""
        return self._hospital_parts.queue

    @property
    def writes(self) -> WriteRunner:
        """Writes through the ledger."""
        return self._hospital_parts.writes

    @property
    def resolver(self) -> Resolver:
        """The resolver of UNKNOWN writes."""
        return self._hospital_parts.resolver

    @property
    def mirror(self) -> DirectoryMirror:
        """The directory mirror."""
        return self._hospital_parts.mirror

    @property
    def refresher(self) -> DirectoryRefresher:
        """The directory mirror's refresher."""
        return self._hospital_parts.refresher

    @property
    def hospital(self) -> Hospital:
        """The hospital servicers' collaborators."""
        return self._hospital_parts.hospital

    def components(self) -> list[admin_pb2.Component]:
        """What GetEdgeInfo reports about the parts whose state the edge knows."""
        components = []
        if self.dialer is not None:
            up = sum(slot.connected for slot in self.dialer.slots)
            if up == len(self.dialer.slots):
                state = admin_pb2.COMPONENT_STATE_SERVING
            elif up:
                state = admin_pb2.COMPONENT_STATE_DEGRADED
            else:
                state = admin_pb2.COMPONENT_STATE_NOT_SERVING
            components.append(
                admin_pb2.Component(
                    name="tunnel", state=state, detail=f"{up} of {len(self.dialer.slots)} up"
                )
            )
        if self._parts is not None:
            components.append(self._parts.his_check.component())
        damage = self._parts.damage() if self._parts is not None else {}
        for name, found in damage.items():
            components.append(
                admin_pb2.Component(
                    name=name,
                    state=admin_pb2.COMPONENT_STATE_NOT_SERVING,
                    detail=f"{found}: calls that need it fail with DATA_LOSS; stop the edge "
                    "and restore the file",
                )
                if found
                else admin_pb2.Component(name=name, state=admin_pb2.COMPONENT_STATE_SERVING)
            )
        return components

    async def start(self) -> None:
        """Checks the data directory and opens the stores (idempotent).

        :meth:`run` and ``async with`` call it. A failed start closes what it opened.

        Raises:
            StoreRefused: a store failed its checks (see :class:`DataDir`).
            OSError: the data directory or a store cannot be created or read.
        """
        if self._started:
            return
        try:
            if self._parts is not None:
                await self._parts.open(self._stack)
            await self._observe()
        except BaseException:
            await self.aclose()
            raise
        self._started = True

    async def _observe(self) -> None:
        """Opens the span ring (after the data directory's checks) and ``/metrics``."""
        obs = self.config.observability
        if obs.enabled:
            await asyncio.to_thread(self.spans.open)
            self._stack.callback(self.spans.close)
            self.tracing.start()
            self._stack.push_async_callback(self.tracing.shutdown)
        if obs.metrics_listen:
            self.metrics = MetricsServer(obs.metrics_listen, token_file=obs.metrics_token_file)
            await self.metrics.start()
            self._stack.push_async_callback(self.metrics.stop)

    async def run(self) -> None:
        """Runs the queue, the resolver, the refresher and the dialer until :meth:`shutdown`.

        The first component that fails tears the others down.
        """
        await self.start()
        async with asyncio.TaskGroup() as group:
            if self._parts is not None:
                self._parts.start_tasks(group)
            if self.dialer is not None:
                group.create_task(self.dialer.run(), name="edge-dialer")
            if self.uplink is not None:
                group.create_task(self.uplink.run(), name="edge-uplink")
            if self.updater is not None:
                group.create_task(self.updater.run(), name="edge-updater")
            group.create_task(self._wait_stop(), name="edge-stop")

    async def _wait_stop(self) -> None:
        await self._stopping.wait()
        if self.updater is not None:
            self.updater.stop()
        if self.uplink is not None:
            await self.uplink.shutdown()
        if self.dialer is not None:
            await self.dialer.shutdown(self.config.grace_seconds)
        if self._parts is not None:
            await self._parts.stop(self.config.grace_seconds)

    async def shutdown(self) -> None:
        """Drains the tunnels, stops the queue and the resolver, closes the stores."""
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the stores and the adapter (after :meth:`run` has returned).

        Then notes the clean stop, with each store's entry count, in the identity record.
        """
        await self._stack.aclose()

    async def __aenter__(self) -> EdgeApp:
        await self.start()
        self._runner = asyncio.create_task(self.run(), name="edge-app")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
