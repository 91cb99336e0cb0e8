"""Configuration of a cloud node: frozen, validated, loaded once at the edge of the process."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import socket
import typing
from collections.abc import Mapping
from pathlib import Path

from cloud import edgeconfig
from cloud.edgeconfig import EdgeApiConfig, HealthConfig, ProbesConfig, ReportsConfig
from mesh.config import ConfigError, Section, load_toml
from mesh.net import parse_hostport
from mesh.observability_config import ObservabilityConfig
from mesh.tunnel import TunnelConfig

__all__ = [
    "AccountsConfig",
    "NodeConfig",
    "OrdersConfig",
    "PatientApiConfig",
    "PaymentsConfig",
    "ReconcileConfig",
    "SyncConfig",
    "TlsMode",
    "UpgradesConfig",
    "parse_listen",
    "parse_rate",
]


class TlsMode(enum.StrEnum):
    """Where the node's TLS certificate comes from."""

    DEV = "dev"
    """A development CA and certificate made under ``<data_dir>/tls`` on first run."""
    FILES = "files"
    """The operator's PEM files (``tls.cert``, ``tls.key``, ``tls.ca``)."""
    OFF = "off"
    """Plaintext; only for a node that listens on loopback behind a TLS-terminating proxy."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split a listen address ``HOST:PORT``; see `mesh.net.parse_hostport`.

    Raises:
        ValueError: the value is not ``HOST:PORT`` with a port in 0..65535.
    """
    return parse_hostport(value)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other name may resolve to a public interface
        return False


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """A rate limit ``N/DURATION`` (``5/10m``: five at once, all earned back in ten minutes).

    Returns:
        ``(burst, seconds)``.

    Raises:
        ValueError: not ``N/DURATION`` with N >= 1 and a duration > 0 (units ms, s, m, h).
    """
    match = _RATE.match(text)
    burst = int(match.group(1)) if match else 0
    per = float(match.group(2) or "1") * _UNITS[match.group(3) or "s"] if match else 0.0
    if burst < 1 or per <= 0:
        raise ValueError(f"{text!r} is not a rate: expected N/DURATION, e.g. 5/10m or 100/1s")
    return burst, per


_RATES = ("codes_per_phone", "codes_per_address", "attempts_per_phone", "attempts_per_address")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountsConfig:
    """Sign-in, sessions and patients of patient accounts (``[accounts]``)."""

    code_ttl: float = 300.0
    """Seconds a one-time sign-in code stays valid."""
    code_attempts: int = 5
    """Wrong codes a challenge tolerates; the last one burns it."""
    token_ttl: float = 30 * 86400.0
    """Seconds an access token stays valid (30 days)."""
    codes_per_phone: str = "5/10m"
    """Codes sent to one phone number (StartSignIn), as ``N/DURATION``."""
    codes_per_address: str = "30/10m"
    """Codes requested from one client address."""
    attempts_per_phone: str = "10/10m"
    """Sign-in attempts (CompleteSignIn) for one phone number."""
    attempts_per_address: str = "60/10m"
    """Sign-in attempts from one client address."""
    max_patients: int = 10
    """Patients one account may bind."""
    hospital_timeout: float = 10.0
    """Deadline of one call to a hospital (FindPatient, RegisterPatient)."""

    def __post_init__(self) -> None:
        for name in ("code_ttl", "token_ttl", "hospital_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"accounts.{name}: must be > 0, got {getattr(self, name)}")
        for name, low, high in (("code_attempts", 1, 20), ("max_patients", 1, 100)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"accounts.{name}: must be within [{low}, {high}]")
        for name in _RATES:
            self.rate(name)

    def rate(self, name: str) -> tuple[int, float]:
        """The ``(burst, seconds)`` of one of the rate settings, e.g. ``codes_per_phone``.

        Raises:
            ConfigError: the setting is not a rate.
        """
        try:
            return parse_rate(getattr(self, name))
        except ValueError as err:
            raise ConfigError(f"accounts.{name}: {err}") from None


_POSITIVE = (
    "slot_interval",
    "directory_interval",
    "drift_interval",
    "call_timeout",
    "pass_timeout",
    "stale_after",
    "lease_seconds",
    "replica_check_interval",
)


@dataclasses.dataclass(frozen=True)
class OrdersConfig:
    """The order coordinator's timings and thresholds (``[orders]``)."""

    hospital_timeout: float = 10.0
    """Deadline of one call to a hospital (HoldSlot, BookAppointment, GetAppointment, …)."""
    channel_timeout: float = 10.0
    """Deadline of one call to the payment channel."""
    payment_minutes: int = 15
    """How long a patient has to pay (the hospital's hold may end sooner; the earlier wins)."""
    confirmations: int = 2
    """Reads by key in a row that must agree before a refusal (which may lead to a refund)
    or an absence (which leads to sending the write again) is acted on."""
    review_after: float = 600.0
    """Seconds an order may go without evidence before it waits for a person (manual review,
    never an automatic refund)."""
    payment_poll: float = 5.0
    """Seconds between queries of a pending payment at the channel (a lost notification)."""
    backoff_initial: float = 0.2
    """First delay between reads that found no evidence, seconds (exponential, full jitter)."""
    backoff_max: float = 30.0
    """Longest delay between those reads."""
    tick: float = 0.5
    """Seconds between scans for orders that are due."""
    concurrency: int = 32
    """Orders worked on at once by one node."""

    def __post_init__(self) -> None:
        for name in (
            "hospital_timeout",
            "channel_timeout",
            "review_after",
            "payment_poll",
            "backoff_initial",
            "tick",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"orders.{name}: must be > 0, got {getattr(self, name)}")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError("orders.backoff_max: must be >= backoff_initial")
        for name, low, high in (
            ("confirmations", 1, 10),
            ("payment_minutes", 1, 120),
            ("concurrency", 1, 1000),
        ):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"orders.{name}: must be within [{low}, {high}]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """How the node keeps the public read store in sync with every hospital (``[sync]``)."""

    enabled: bool = True
    """Whether this node syncs the hospitals whose tunnels it holds."""
    slot_interval: float = 30.0
    """Seconds between incremental syncs of schedules and slots (what changes all day)."""
    directory_interval: float = 300.0
    """Seconds between incremental syncs of departments and doctors."""
    drift_interval: float = 900.0
    """Seconds between digest comparisons of a hospital's directory with the store."""
    concurrency: int = 16
    """Hospitals synced at once, over all of them; a slow one holds one place only."""
    call_timeout: float = 30.0
    """Deadline of one call to a hospital (one page, one digest)."""
    pass_timeout: float = 300.0
    """Longest time one pass (all pages of one GetChanges request) may take."""
    page_size: int = 1000
    """Changes asked for per page (the edge caps it at 5000)."""
    max_pages: int = 10_000
    """Pages one pass may have before the feed is considered broken."""
    bucket_count: int = 64
    """Buckets per entity kind in digest comparisons (1-4096)."""
    stale_after: float = 180.0
    """A hospital whose oldest data is older than this many seconds is shown stale."""
    lease_seconds: float = 120.0
    """How long a node's claim to sync a hospital lasts without renewal (multi-node)."""
    max_replica_lag: float = 5.0
    """Reads go to a read replica only while it is less than this many seconds behind."""
    replica_check_interval: float = 2.0
    """Seconds between replica lag checks."""

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"sync.{name}: must be > 0, got {getattr(self, name)}")
        if self.max_replica_lag < 0:
            raise ConfigError(f"sync.max_replica_lag: must be >= 0, got {self.max_replica_lag}")
        for name, low, high in (
            ("concurrency", 1, 10_000),
            ("page_size", 1, 5000),
            ("max_pages", 1, 10_000_000),
            ("bucket_count", 1, 4096),
        ):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"sync.{name}: must be within [{low}, {high}]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpgradesConfig:
    """Edge packages the node serves and the rollouts it runs (``[upgrades]``)."""

    trusted_roots: tuple[Path, ...] = ()
    """Root public keys (PEM) a package must be certified under to be published; the same
    keys the edges trust. Empty: ``hplus fleet publish`` refuses every package."""
    node_max_bytes_per_second: int = 20_000_000
    """Upgrade bytes this node sends per second over all download streams together (a
    token bucket), so a wave cannot saturate the node's link; 0: no limit."""
    max_downloads_per_hospital: int = 2
    """Download streams one hospital may hold at once; more: RESOURCE_EXHAUSTED."""
    max_delta_bases: int = 10
    """Older versions a delta to a target version is computed from (the newest ones)."""
    health_gate_timeout: float = 300.0
    """Seconds a new version has to pass its health gate on the edge."""
    manifest_ttl: float = 3600.0
    """Seconds a manifest stays valid (``expire_time``); the edge asks again after."""
    check_interval: float = 900.0
    """Seconds an edge waits before asking again (``next_check_after``)."""

    def __post_init__(self) -> None:
        for name in ("health_gate_timeout", "manifest_ttl", "check_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"upgrades.{name}: must be > 0, got {getattr(self, name)}")
        if self.node_max_bytes_per_second < 0:
            raise ConfigError("upgrades.node_max_bytes_per_second: must be >= 0")
        for name, low, high in (("max_downloads_per_hospital", 1, 64), ("max_delta_bases", 0, 100)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"upgrades.{name}: must be within [{low}, {high}]")


def _upgrades_from_file(doc: Mapping[str, object], path: Path, text: str) -> dict[str, object]:
    section = Section.of(doc, "upgrades", path=path, text=text)
    fields = {f.name: f for f in dataclasses.fields(UpgradesConfig)}
    section.reject_unknown(fields)
    given = typing.cast(Mapping[str, object], doc.get("upgrades", {}))
    kwargs: dict[str, object] = {}
    for name, field in fields.items():
        if name not in given:
            continue
        if name == "trusted_roots":
            roots = section.get(name, list, [])
            kwargs[name] = tuple(
                (p if p.is_absolute() else path.parent / p)
                for p in (
                    Path(
                        section.check(
                            name,
                            r,
                            lambda v: isinstance(v, str) and bool(v),
                            "must be a list of PEM file paths",
                        )
                    )
                    for r in roots
                )
            )
        else:
            kind = {"int": int, "float": float}[str(field.type)]
            kwargs[name] = section.get(name, kind, field.default)
    try:
        return {"upgrades": UpgradesConfig(**kwargs)} if kwargs else {}  # type: ignore[arg-type]
    except ConfigError as err:
        key = err.message.split(":", 1)[0].removeprefix("upgrades.")
        raise section.error(key, err.message.split(": ", 1)[1]) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatientApiConfig:
    """The patient API's read side (``[patient_api]``)."""

    read_cache_seconds: float = 2.0
    """Seconds a ListSlots answer is served from the node's cache (0: no cache); keep it
    well under ``sync.slot_interval`` so what a sync writes shows at once."""
    read_cache_entries: int = 10_000
    """ListSlots answers the cache keeps at most (least recently used dropped; at most
    64 MiB of them whatever their count)."""

    def __post_init__(self) -> None:
        if not 0 <= self.read_cache_seconds <= 60:
            raise ConfigError(
                f"patient_api.read_cache_seconds: must be within [0, 60], "
                f"got {self.read_cache_seconds}"
            )
        if not 1 <= self.read_cache_entries <= 1_000_000:
            raise ConfigError(
                f"patient_api.read_cache_entries: must be within [1, 1000000], "
                f"got {self.read_cache_entries}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentsConfig:
    """The payment channel the node takes money through (``[payments]``).

    Off unless ``channel_url`` is set; then the merchant and key settings are required.
    """

    channel_url: str = ""
    """Base URL of the channel's merchant API (the simulator's ``http://127.0.0.1:PORT``)."""
    merchant_id: str = ""
    """Our merchant id at the channel (``mchid``)."""
    app_id: str = ""
    """Our app id at the channel (``appid``), echoed to the payer's wallet."""
    merchant_key_file: Path | None = None
    """File holding the 32-byte merchant API key (mode 0600): signs our requests and
    decrypts notification resources."""
    platform_public_key_file: Path | None = None
    """PEM public key of the channel's platform: every notification must verify under it."""
    notify_listen: str = "127.0.0.1:0"
    """``HOST:PORT`` of the notification endpoint (HTTPS with the node's TLS; plaintext only
    when the node's TLS is off or ``notify_plaintext`` is set, both loopback only)."""
    notify_url: str = ""
    """URL the channel is told to notify; default: this endpoint's scheme, host and bound
    port with the path ``/pay/notify``."""
    notify_plaintext: bool = False
    """Serve notifications over plaintext HTTP (loopback only, e.g. behind a TLS proxy)."""
    notify_window: float = 300.0
    """Seconds a notification's timestamp may differ from our clock (replay protection)."""
    notify_max_body: int = 65536
    """Largest notification body accepted, in bytes; larger: 413, logged."""
    timeout: float = 10.0
    """Deadline of one call to the channel, seconds."""
    connect_timeout: float = 3.0
    """Deadline of connecting to the channel, seconds."""
    retry_deadline: float = 10.0
    """How long a call is retried while the channel is unreachable (all calls are idempotent
    by their out-trade / out-refund number)."""

    @property
    def enabled(self) -> bool:
        """Whether a channel is configured."""
        return bool(self.channel_url)

    def __post_init__(self) -> None:
        for name in ("notify_window", "timeout", "connect_timeout", "retry_deadline"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"payments.{name}: must be > 0, got {getattr(self, name)}")
        if not 1024 <= self.notify_max_body <= 16 * 1024 * 1024:
            raise ConfigError("payments.notify_max_body: must be within [1024, 16777216]")
        try:
            host, _ = parse_listen(self.notify_listen)
        except ValueError as err:
            raise ConfigError(f"payments.notify_listen: {err}") from None
        if self.notify_plaintext and not _is_loopback(host):
            raise ConfigError(
                f"payments.notify_plaintext: for loopback only, but notify_listen is "
                f"{self.notify_listen}"
            )
        if not self.enabled:
            return
        if not self.channel_url.startswith(("http://", "https://")):
            raise ConfigError("payments.channel_url: must be an http:// or https:// URL")
        for name in ("merchant_id", "merchant_key_file", "platform_public_key_file"):
            if not getattr(self, name):
                raise ConfigError(f"payments.{name}: required when channel_url is set")


_DAILY_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReconcileConfig:
    """The daily three-way reconciliation (``[reconcile]``)."""

    daily_at: str = "02:00"
    """``HH:MM`` (UTC+8, the channel's business time zone) at which the node reconciles the
    previous business date; runs only with a payment channel configured; ``""``: never."""
    hospital_timeout: float = 30.0
    """Deadline of one ``GetDailyLedger`` page from a hospital, seconds."""

    def __post_init__(self) -> None:
        if self.daily_at and not _DAILY_AT.match(self.daily_at):
            raise ConfigError(f"reconcile.daily_at: expected HH:MM, got {self.daily_at!r}")
        if not self.hospital_timeout > 0:
            raise ConfigError("reconcile.hospital_timeout: must be > 0")

    @property
    def daily_time(self) -> tuple[int, int] | None:
        """``(hour, minute)`` of the daily run, or None when off."""
        match = _DAILY_AT.match(self.daily_at)
        return (int(match.group(1)), int(match.group(2))) if match else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a cloud node needs to start."""

    listen: str = "127.0.0.1:50051"
    """``HOST:PORT`` of the public endpoint: tunnels from edges, health (port 0: any free).

    Its gRPC message limit is the tunnel's (``tunnel.max_inbound_outer_message_bytes``)."""
    registry_listen: str | None = None
    """``HOST:PORT`` of the registry endpoint (``RegistryService``); default: the host of
    ``listen`` and the next port (port 0 when ``listen``'s is 0). Release images travel whole
    in one message, so it keeps a 33 MiB message limit that the tunnel endpoint must not
    have: it is a server of its own."""
    internal_listen: str = "127.0.0.1:50061"
    """``HOST:PORT`` of the internal endpoint: node-to-node forwarding and operations.

    Authenticated with the cluster secret; never expose it outside the cloud's network."""
    dashboard_listen: str | None = None
    """``HOST:PORT`` of the operators' dashboard (HTTPS with the node's certificate;
    plaintext only on loopback); ``None``: not served."""
    dashboard_refresh_seconds: float = 5.0
    """How often the dashboard's pages refresh themselves."""
    data_dir: Path = Path("var")
    """Where embedded state lives: SQLite files, development TLS material."""
    node_id: str = dataclasses.field(default_factory=socket.gethostname)
    """This node's name among the cloud's gateway nodes."""
    tls_mode: TlsMode = TlsMode.DEV
    """Where the TLS certificate comes from."""
    tls_cert: Path | None = None
    """Server certificate chain (PEM), with ``tls_mode = files``."""
    tls_key: Path | None = None
    """Server private key (PEM), with ``tls_mode = files``."""
    tls_ca: Path | None = None
    """CA certificate clients should trust (PEM), with ``tls_mode = files``."""
    grace_seconds: float = 10.0
    """How long in-flight calls may finish after SIGTERM before they are cancelled."""
    fleet_database_url: str | None = None
    """SQLAlchemy URL of the fleet database; default a SQLite file in ``data_dir``."""
    registry_database_url: str | None = None
    """SQLAlchemy URL of the registry database (releases, field census); default a SQLite
    file in ``data_dir``."""
    readstore_database_url: str | None = None
    """SQLAlchemy URL of the public read store's primary; default a SQLite file in
    ``data_dir``."""
    readstore_replica_urls: tuple[str, ...] = ()
    """URLs of the read store's streaming replicas (PostgreSQL); reads go to a current one."""
    sync: SyncConfig = dataclasses.field(default_factory=SyncConfig)
    """How the read store is kept in sync with the hospitals."""
    partitions_database_url: str | None = None
    """SQLAlchemy URL of the control database (the partition map, apps); default a SQLite
    file in ``data_dir``."""
    partition_urls: Mapping[str, str] | None = None
    """Where the first partitions, ``south`` and ``north``, live; used only when the map is
    made (first start). Default: SQLite files under ``data_dir/partitions``."""
    partition_map_poll: float = 0.5
    """Seconds between checks of the partition map's version (a split is noticed within)."""
    accounts: AccountsConfig = dataclasses.field(default_factory=AccountsConfig)
    """Sign-in, sessions and patients of patient accounts."""
    patient_api: PatientApiConfig = dataclasses.field(default_factory=PatientApiConfig)
    """The patient API's read cache."""
    orders: OrdersConfig = dataclasses.field(default_factory=OrdersConfig)
    """The order coordinator's timings and thresholds."""
    census_rate: float = 0.01
    """Fraction of tunnel calls the field census samples (0 turns it off)."""
    redis_url: str | None = None
    """Redis for tunnel presence shared by many nodes; ``None``: in-process (one node)."""
    presence_ttl: float = 30.0
    """Seconds a node's presence records live without a heartbeat (heartbeat: TTL/3)."""
    redis_namespace: str = "hplus:"
    """Prefix of every Redis key, so several environments can share one Redis."""
    max_tunnels_per_credential: int = 4
    """Live tunnels one credential may hold across the cloud; more: RESOURCE_EXHAUSTED.

    An edge holds one or two tunnels (two when it is given two gateways) plus, briefly, one
    more while it reconnects: 4 leaves room for that and stops a stolen credential from
    opening thousands. Exact per node; across nodes as current as presence is."""
    liveness_probe_seconds: float = 2.0
    """How long an edge's tunnel has to answer a ping when a new connection claims the same
    edge id and connection index: if it answers, the newcomer is refused (ALREADY_EXISTS);
    if not, the silent tunnel is replaced (a reconnect after a half-open connection)."""
    revocation_poll_seconds: float = 1.0
    """How often the node asks the fleet database whether a credential of its live tunnels
    was revoked: the safety net behind the revocation message (which is immediate)."""
    cluster_secret: str | None = dataclasses.field(default=None, repr=False)
    """Shared secret of the cloud's nodes for the internal endpoint; ``None``: made once
    under ``data_dir`` (fine for nodes that share a data directory, e.g. in development)."""
    tunnel: TunnelConfig = dataclasses.field(default_factory=TunnelConfig)
    """Limits and timers of the tunnels this node accepts (``[tunnel]``; see
    `mesh.tunnel.TunnelConfig` for each one and its reason)."""
    # What edges report and what the node checks on them (`cloud.edgeconfig`).
    edge_api: EdgeApiConfig = dataclasses.field(default_factory=EdgeApiConfig)
    """Bounds of ``EdgeService`` (``[edge_api]``)."""
    health: HealthConfig = dataclasses.field(default_factory=HealthConfig)
    """Edge health history and alert thresholds (``[health]``)."""
    probes: ProbesConfig = dataclasses.field(default_factory=ProbesConfig)
    """Business probes (``[probes]``)."""
    reports: ReportsConfig = dataclasses.field(default_factory=ReportsConfig)
    """Report lookups through the edges' task queues (``[reports]``)."""
    upgrades: UpgradesConfig = dataclasses.field(default_factory=UpgradesConfig)
    """Edge packages and rollouts (``[upgrades]``)."""
    observability: ObservabilityConfig = dataclasses.field(default_factory=ObservabilityConfig)
    """``/metrics`` endpoint, span store bounds, OTLP export (``[observability]``)."""

    @property
    def traces_url(self) -> str:
        """The span store's URL, defaulted to ``<data_dir>/traces.db``."""
        return self.observability.traces_database_url or (
            f"sqlite+aiosqlite:///{self.data_dir / 'traces.db'}"
        )

    payments: PaymentsConfig = dataclasses.field(default_factory=PaymentsConfig)
    """The payment channel and the notification endpoint (``[payments]``)."""
    reconcile: ReconcileConfig = dataclasses.field(default_factory=ReconcileConfig)
    """The daily three-way reconciliation (``[reconcile]``)."""

    @property
    def registry_url(self) -> str:
        """The registry database URL, defaulted to ``<data_dir>/registry.db``."""
        return self.registry_database_url or (
            f"sqlite+aiosqlite:///{self.data_dir / 'registry.db'}"
        )

    @property
    def partitions_url(self) -> str:
        """The control database URL, defaulted to ``<data_dir>/partitions.db``."""
        return self.partitions_database_url or (
            f"sqlite+aiosqlite:///{self.data_dir / 'partitions.db'}"
        )

    @property
    def first_partition_urls(self) -> dict[str, str]:
        """Where ``south`` and ``north`` are made on the first start.

        The default paths are absolute: the map keeps them, and every process reads it.
        """
        where = self.data_dir.absolute() / "partitions"
        urls = {name: f"sqlite+aiosqlite:///{where / f'{name}.db'}" for name in ("south", "north")}
        urls.update(self.partition_urls or {})
        return urls

    @property
    def registry_address(self) -> str:
        """``registry_listen``, or its default derived from ``listen``."""
        if self.registry_listen:
            return self.registry_listen
        host, port = parse_listen(self.listen)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port + 1 if port else 0}"

    @property
    def readstore_url(self) -> str:
        """The read store's primary URL, defaulted to ``<data_dir>/readstore.db``."""
        return self.readstore_database_url or (
            f"sqlite+aiosqlite:///{self.data_dir / 'readstore.db'}"
        )

    @property
    def reports_url(self) -> str:
        """The report lookups' database URL, defaulted to ``<data_dir>/reports.db``."""
        return self.reports.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'reports.db'}"

    @property
    def fleet_url(self) -> str:
        """The fleet database URL, defaulted to ``<data_dir>/fleet.db``."""
        return self.fleet_database_url or f"sqlite+aiosqlite:///{self.data_dir / 'fleet.db'}"

    def __post_init__(self) -> None:
        for name in ("listen", "internal_listen"):
            try:
                parse_listen(getattr(self, name))
            except ValueError as err:
                raise ConfigError(f"{name}: {err}") from None
        try:
            parse_listen(self.registry_address)
        except ValueError as err:
            raise ConfigError(f"registry_listen: {err}") from None
        if not 0.0 <= self.census_rate <= 1.0:
            raise ConfigError(f"census_rate: must be within [0, 1], got {self.census_rate}")
        if self.presence_ttl <= 0:
            raise ConfigError(f"presence_ttl: must be > 0, got {self.presence_ttl}")
        if not self.node_id:
            raise ConfigError("node_id: must not be empty")
        if self.grace_seconds < 0:
            raise ConfigError(f"grace_seconds: must be >= 0, got {self.grace_seconds}")
        if self.max_tunnels_per_credential < 1:
            raise ConfigError(
                f"max_tunnels_per_credential: must be >= 1, got {self.max_tunnels_per_credential}"
            )
        if self.liveness_probe_seconds <= 0:
            raise ConfigError(
                f"liveness_probe_seconds: must be > 0, got {self.liveness_probe_seconds}"
            )
        if self.dashboard_listen is not None:
            try:
                parse_listen(self.dashboard_listen)
            except ValueError as err:
                raise ConfigError(f"dashboard_listen: {err}") from None
        if self.dashboard_refresh_seconds <= 0:
            raise ConfigError(
                f"dashboard_refresh_seconds: must be > 0, got {self.dashboard_refresh_seconds}"
            )
        if self.partition_map_poll <= 0:
            raise ConfigError(f"partition_map_poll: must be > 0, got {self.partition_map_poll}")
        unknown = set(self.partition_urls or {}) - {"south", "north"}
        if unknown:
            raise ConfigError(
                f"partitions: the first partitions are south and north, not {unknown}"
            )
        if self.revocation_poll_seconds <= 0:
            raise ConfigError(
                f"revocation_poll_seconds: must be > 0, got {self.revocation_poll_seconds}"
            )
        if self.tls_mode is TlsMode.OFF:
            for name, address in (
                ("listen", self.listen),
                ("internal_listen", self.internal_listen),
                ("registry_listen", self.registry_address),
                *((("dashboard_listen", self.dashboard_listen),) if self.dashboard_listen else ()),
            ):
                if not _is_loopback(parse_listen(address)[0]):
                    raise ConfigError(
                        f"tls mode 'off' is for loopback only, but {name} is {address}: "
                        "plaintext may listen only on 127.0.0.0/8, ::1 or localhost "
                        "(use tls mode 'dev' or 'files' on other addresses)"
                    )
        if self.tls_mode is TlsMode.OFF and self.payments.enabled:
            host, _ = parse_listen(self.payments.notify_listen)
            if not _is_loopback(host):
                raise ConfigError(
                    f"tls mode 'off' is for loopback only, but payments.notify_listen is "
                    f"{self.payments.notify_listen}"
                )
        if self.tls_mode is TlsMode.FILES:
            missing = [n for n in ("tls_cert", "tls_key", "tls_ca") if getattr(self, n) is None]
            if missing:
                raise ConfigError(f"tls mode 'files' needs {', '.join(missing)}")

    @classmethod
    def load(
        cls,
        *,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> NodeConfig:
        """Build the configuration from a TOML file, the environment and flag overrides.

        Precedence, lowest first: built-in defaults, the file, ``HPLUS_*`` environment
        variables, then ``overrides`` (command-line flags; ``None`` values are ignored).
        Secrets (database passwords, the cluster secret) belong in the environment, not in
        the file.

        Args:
            path: a TOML file with ``[node]``, ``[tls]``, ``[databases]``, ``[redis]``,
                ``[census]`` and ``[tunnel]`` tables, or ``None``.
            env: the environment to read the ``HPLUS_*`` variables of ``_ENV`` from; tests
                pass their own.
            overrides: values from flags, by field name.

        Raises:
            ConfigError: the file is unreadable or invalid, or a value is wrong; the
                message names the file, line and key.
        """
        values: dict[str, object] = {}
        if path is not None:
            values.update(_from_file(path))
        environ = env or {}
        for var, field in _ENV.items():
            if environ.get(var):
                values[field] = Path(environ[var]) if field == "data_dir" else environ[var]
        if environ.get("HPLUS_READSTORE_REPLICA_URLS"):
            values["readstore_replica_urls"] = tuple(
                u.strip() for u in environ["HPLUS_READSTORE_REPLICA_URLS"].split(",") if u.strip()
            )
        seen = {f: environ[v] for v, f in _OBSERVABILITY_ENV.items() if environ.get(v)}
        if seen:
            base = values.get("observability") or ObservabilityConfig()
            try:
                values["observability"] = dataclasses.replace(base, **seen)  # type: ignore[type-var]
            except ValueError as err:
                raise ConfigError(f"environment: {err}") from None
        first = {n: environ[v] for n, v in _PARTITION_ENV.items() if environ.get(v)}
        if first:
            values["partition_urls"] = {**dict(values.get("partition_urls") or {}), **first}  # type: ignore[call-overload]
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]


_ENV = {
    "HPLUS_LISTEN": "listen",
    "HPLUS_INTERNAL_LISTEN": "internal_listen",
    "HPLUS_REGISTRY_LISTEN": "registry_listen",
    "HPLUS_DASHBOARD_LISTEN": "dashboard_listen",
    "HPLUS_DATA_DIR": "data_dir",
    "HPLUS_NODE_ID": "node_id",
    "HPLUS_FLEET_DATABASE_URL": "fleet_database_url",
    "HPLUS_REGISTRY_DATABASE_URL": "registry_database_url",
    "HPLUS_READSTORE_DATABASE_URL": "readstore_database_url",
    "HPLUS_REDIS_URL": "redis_url",
    "HPLUS_REDIS_NAMESPACE": "redis_namespace",
    "HPLUS_CLUSTER_SECRET": "cluster_secret",
    "HPLUS_PARTITIONS_DATABASE_URL": "partitions_database_url",
}
_OBSERVABILITY_ENV = {
    "HPLUS_METRICS_LISTEN": "metrics_listen",
    "HPLUS_OTLP_ENDPOINT": "otlp_endpoint",
    "HPLUS_TRACES_DATABASE_URL": "traces_database_url",
}
"""Environment variables and the fields they set."""

_PARTITION_ENV = {"south": "HPLUS_SOUTH_DATABASE_URL", "north": "HPLUS_NORTH_DATABASE_URL"}
"""Environment variables of the first partitions' URLs."""


def _from_file(path: Path) -> dict[str, object]:
    doc, text = load_toml(path)
    values: dict[str, object] = {}
    Section(doc, name="", path=path, text=text).reject_unknown(
        [
            "node",
            "tls",
            "databases",
            "redis",
            "census",
            "tunnel",
            "sync",
            "partitions",
            "accounts",
            "dashboard",
            *_EDGE_TABLES,
            "upgrades",
            "observability",
            "patient_api",
            "payments",
            "reconcile",
            "orders",
        ]
    )

    def rel(p: str) -> Path:
        # Relative paths in a file are relative to the file, not to the cwd.
        return Path(p) if Path(p).is_absolute() else path.parent / p

    node = Section.of(doc, "node", path=path, text=text)
    node.reject_unknown(
        ["listen", "internal_listen", "registry_listen", "data_dir", "node_id", "grace_seconds"]
    )
    present = doc.get("node", {})
    for key in ("listen", "internal_listen", "registry_listen"):
        if key in present:
            value = node.get(key, str, "")
            try:
                parse_listen(value)
            except ValueError as err:
                raise node.error(key, str(err)) from None
            values[key] = value
    if "data_dir" in present:
        values["data_dir"] = rel(node.get("data_dir", str, "var"))
    if "node_id" in present:
        values["node_id"] = node.check(
            "node_id", node.get("node_id", str, ""), bool, "must not be empty"
        )
    if "grace_seconds" in present:
        values["grace_seconds"] = node.check(
            "grace_seconds",
            node.get("grace_seconds", float, 10.0),
            lambda v: v >= 0,
            "must be >= 0",
        )

    tls = Section.of(doc, "tls", path=path, text=text)
    tls.reject_unknown(["mode", "cert", "key", "ca"])
    mode_text = tls.get("mode", str, TlsMode.DEV.value)
    try:
        values["tls_mode"] = TlsMode(mode_text)
    except ValueError:
        raise tls.error(
            "mode", f"{mode_text!r} is not one of {', '.join(m.value for m in TlsMode)}"
        ) from None
    for key in ("cert", "key", "ca"):
        if key in doc.get("tls", {}):
            values[f"tls_{key}"] = rel(tls.get(key, str, ""))
    if values["tls_mode"] is TlsMode.FILES:
        for key in ("cert", "key", "ca"):
            if f"tls_{key}" not in values:
                raise tls.error(key, "required when mode = 'files'")

    dbs = Section.of(doc, "databases", path=path, text=text)
    dbs.reject_unknown(["fleet", "registry", "readstore", "readstore_replicas", "partitions"])
    for name in ("fleet", "registry", "readstore", "partitions"):
        if name in doc.get("databases", {}):
            values[f"{name}_database_url"] = dbs.check(
                name, dbs.get(name, str, ""), bool, "must be a SQLAlchemy URL"
            )
    if "readstore_replicas" in doc.get("databases", {}):
        replicas = dbs.get("readstore_replicas", list, [])
        values["readstore_replica_urls"] = tuple(
            dbs.check(
                "readstore_replicas",
                u,
                lambda v: isinstance(v, str) and bool(v),
                "must be a list of SQLAlchemy URLs",
            )
            for u in replicas
        )
    values.update(_sync_from_file(doc, path, text))
    board = Section.of(doc, "dashboard", path=path, text=text)
    board.reject_unknown(["listen", "refresh_seconds"])
    if "listen" in doc.get("dashboard", {}):
        listen = board.get("listen", str, "")
        try:
            parse_listen(listen)
        except ValueError as err:
            raise board.error("listen", str(err)) from None
        values["dashboard_listen"] = listen
    if "refresh_seconds" in doc.get("dashboard", {}):
        values["dashboard_refresh_seconds"] = board.check(
            "refresh_seconds",
            board.get("refresh_seconds", float, 5.0),
            lambda v: v > 0,
            "must be > 0",
        )
    values.update(_patient_api_from_file(doc, path, text))
    census = Section.of(doc, "census", path=path, text=text)
    census.reject_unknown(["rate"])
    if "rate" in doc.get("census", {}):
        values["census_rate"] = census.check(
            "rate",
            census.get("rate", float, 0.01),
            lambda v: 0.0 <= v <= 1.0,
            "must be within [0, 1]",
        )

    red = Section.of(doc, "redis", path=path, text=text)
    red.reject_unknown(["url", "presence_ttl", "namespace"])
    if "namespace" in doc.get("redis", {}):
        values["redis_namespace"] = red.check(
            "namespace", red.get("namespace", str, ""), bool, "must not be empty"
        )
    if "url" in doc.get("redis", {}):
        values["redis_url"] = red.check(
            "url",
            red.get("url", str, ""),
            lambda v: v.startswith(("redis://", "rediss://", "unix://")),
            "must start with redis://, rediss:// or unix://",
        )
    if "presence_ttl" in doc.get("redis", {}):
        values["presence_ttl"] = red.check(
            "presence_ttl", red.get("presence_ttl", float, 30.0), lambda v: v > 0, "must be > 0"
        )
    tunnel = Section.of(doc, "tunnel", path=path, text=text)
    tunnel.reject_unknown([*_TUNNEL_KEYS, *_GATEWAY_KEYS])
    present = doc.get("tunnel", {})
    if "max_per_credential" in present:
        values["max_tunnels_per_credential"] = tunnel.check(
            "max_per_credential",
            tunnel.get("max_per_credential", int, 4),
            lambda v: v >= 1,
            "must be >= 1",
        )
    for key in ("liveness_probe", "revocation_poll"):
        if key in present:
            values[_GATEWAY_KEYS[key]] = tunnel.check(
                key, tunnel.get(key, float, 1.0), lambda v: v > 0, "must be > 0"
            )
    if any(key in _TUNNEL_KEYS for key in present):
        values["tunnel"] = _tunnel_from(tunnel, present)
    values.update(_partitions_from_file(doc, path, text))
    values.update(edgeconfig.from_file(doc, path, text))
    values.update(_upgrades_from_file(doc, path, text))
    values.update(_observability_from_file(doc, path, text))
    values.update(_payments_from_file(doc, path, text))
    return values


def _payments_from_file(doc: Mapping[str, object], path: Path, text: str) -> dict[str, object]:
    """``[payments]`` and ``[reconcile]``: every field of PaymentsConfig and ReconcileConfig."""
    values: dict[str, object] = {}
    for table, cls, field_name in (
        ("payments", PaymentsConfig, "payments"),
        ("reconcile", ReconcileConfig, "reconcile"),
    ):
        section = Section.of(doc, table, path=path, text=text)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        section.reject_unknown(fields)
        given = typing.cast(Mapping[str, object], doc.get(table, {}))
        kwargs: dict[str, object] = {}
        for name, field in fields.items():
            if name not in given:
                continue
            kind = str(field.type)
            if kind == "Path | None":
                raw = section.get(name, str, "")
                kwargs[name] = Path(raw) if Path(raw).is_absolute() else path.parent / raw
            else:
                typ = {"int": int, "float": float, "str": str, "bool": bool}[kind]
                kwargs[name] = section.get(name, typ, field.default)
        if kwargs:
            try:
                values[field_name] = cls(**kwargs)  # type: ignore[arg-type]
            except ConfigError as err:
                key = err.message.split(":", 1)[0].split(" ", 1)[0].removeprefix(f"{table}.")
                raise section.error(key, err.message.split(": ", 1)[-1]) from None
    return values


_EDGE_TABLES = ("edge_api", "health", "probes", "reports")
"""Tables `cloud.edgeconfig` reads."""


def _observability_from_file(doc: Mapping[str, object], path: Path, text: str) -> dict[str, object]:
    """``[observability]``: every `ObservabilityConfig` field (paths relative to the file)."""
    section = Section.of(doc, "observability", path=path, text=text)
    fields = {f.name: f for f in dataclasses.fields(ObservabilityConfig)}
    section.reject_unknown(fields)
    given = typing.cast(Mapping[str, object], doc.get("observability", {}))
    kwargs: dict[str, object] = {}
    for name in fields:
        if name not in given:
            continue
        if name == "metrics_token_file":
            raw = Path(section.get(name, str, ""))
            kwargs[name] = raw if raw.is_absolute() else path.parent / raw
        elif name == "enabled":
            kwargs[name] = section.get(name, bool, True)
        elif name == "max_spans":
            kwargs[name] = section.get(name, int, 0)
        elif name in ("span_retention_seconds", "span_sample_rate"):
            kwargs[name] = section.get(name, float, 0.0)
        else:
            kwargs[name] = section.get(name, str, "")
    try:
        return {"observability": ObservabilityConfig(**kwargs)} if kwargs else {}  # type: ignore[arg-type]
    except ValueError as err:
        key, _, why = str(err).partition(": ")
        if key in fields:
            raise section.error(key, why) from None
        raise section.error(None, str(err)) from None


def _partitions_from_file(doc: Mapping[str, object], path: Path, text: str) -> dict[str, object]:
    """``[partitions]`` (first URLs, map poll) and ``[accounts]`` (every AccountsConfig field)."""
    values: dict[str, object] = {}
    parts = Section.of(doc, "partitions", path=path, text=text)
    parts.reject_unknown(["south", "north", "map_poll"])
    present = typing.cast(Mapping[str, object], doc.get("partitions", {}))
    urls = {
        name: parts.check(name, parts.get(name, str, ""), bool, "must be a SQLAlchemy URL")
        for name in ("south", "north")
        if name in present
    }
    if urls:
        values["partition_urls"] = urls
    if "map_poll" in present:
        values["partition_map_poll"] = parts.check(
            "map_poll", parts.get("map_poll", float, 0.5), lambda v: v > 0, "must be > 0"
        )
    accounts = Section.of(doc, "accounts", path=path, text=text)
    fields = {f.name: f for f in dataclasses.fields(AccountsConfig)}
    accounts.reject_unknown(fields)
    given = typing.cast(Mapping[str, object], doc.get("accounts", {}))
    kwargs: dict[str, object] = {}
    for name, field in fields.items():
        if name in given:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            kwargs[name] = accounts.get(name, kind, field.default)
    if kwargs:
        try:
            values["accounts"] = AccountsConfig(**kwargs)  # type: ignore[arg-type]
        except ConfigError as err:
            key = err.message.split(":", 1)[0].removeprefix("accounts.")
            raise accounts.error(key, err.message.split(": ", 1)[1]) from None
    orders = Section.of(doc, "orders", path=path, text=text)
    order_fields = {f.name: f for f in dataclasses.fields(OrdersConfig)}
    orders.reject_unknown(order_fields)
    given = typing.cast(Mapping[str, object], doc.get("orders", {}))
    kwargs = {}
    for name, field in order_fields.items():
        if name in given:
            kind = {"int": int, "float": float}[str(field.type)]
            kwargs[name] = orders.get(name, kind, field.default)
    if kwargs:
        try:
            values["orders"] = OrdersConfig(**kwargs)  # type: ignore[arg-type]
        except ConfigError as err:
            key = err.message.split(":", 1)[0].removeprefix("orders.")
            raise orders.error(key, err.message.split(": ", 1)[1]) from None
    return values


_GATEWAY_KEYS = {
    "max_per_credential": "max_tunnels_per_credential",
    "liveness_probe": "liveness_probe_seconds",
    "revocation_poll": "revocation_poll_seconds",
}
"""``[tunnel]`` settings the gateway applies (rather than each session), by NodeConfig field."""


_TUNNEL_KEYS: dict[str, type] = {
    name: kind for name, kind in typing.get_type_hints(TunnelConfig).items() if kind in (int, float)
}
"""``[tunnel]`` settings: every number of `TunnelConfig`, by its field name."""


def _tunnel_from(section: Section, present: Mapping[str, typing.Any]) -> TunnelConfig:
    values = {
        key: section.get(key, kind, kind()) for key, kind in _TUNNEL_KEYS.items() if key in present
    }
    try:
        return TunnelConfig(**values)
    except ValueError as err:
        # Point at the setting the message names first (a bound may involve two).
        message = str(err)
        named = min((key for key in present if key in message), key=message.find, default=None)
        raise section.error(named, str(err)) from None


def _sync_from_file(doc: dict[str, object], path: Path, text: str) -> dict[str, object]:
    sync = Section.of(doc, "sync", path=path, text=text)
    fields = {f.name: f for f in dataclasses.fields(SyncConfig)}
    sync.reject_unknown(fields)
    present = doc.get("sync", {})
    assert isinstance(present, dict)  # Section.of checked that it is a table
    kwargs: dict[str, object] = {}
    for name, field in fields.items():
        if name not in present:
            continue
        kind = {"bool": bool, "int": int, "float": float}[str(field.type)]
        kwargs[name] = sync.get(name, kind, field.default)
    try:
        return {"sync": SyncConfig(**kwargs)} if kwargs else {}  # type: ignore[arg-type]
    except ConfigError as err:
        key = err.message.split(":", 1)[0].removeprefix("sync.")
        raise sync.error(key, err.message.split(": ", 1)[1]) from None


def _patient_api_from_file(doc: dict[str, object], path: Path, text: str) -> dict[str, object]:
    section = Section.of(doc, "patient_api", path=path, text=text)
    fields = {f.name: f for f in dataclasses.fields(PatientApiConfig)}
    section.reject_unknown(fields)
    present = doc.get("patient_api", {})
    assert isinstance(present, dict)  # Section.of checked that it is a table
    kwargs: dict[str, object] = {}
    for name, field in fields.items():
        if name in present:
            kind = {"int": int, "float": float}[str(field.type)]
            kwargs[name] = section.get(name, kind, field.default)
    try:
        return {"patient_api": PatientApiConfig(**kwargs)} if kwargs else {}  # type: ignore[arg-type]
    except ConfigError as err:
        key = err.message.split(":", 1)[0].removeprefix("patient_api.")
        raise section.error(key, err.message.split(": ", 1)[1]) from None
