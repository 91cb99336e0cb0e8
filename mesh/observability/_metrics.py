"""Prometheus metrics: one registry per process, registration in one line.

Every part registers its metrics with `counter`, `gauge` or `histogram` (idempotent: the
same name returns the same metric, so a module imported twice or a second node in a test
process never fails on a duplicate), e.g.::

    SYNC_LAG = gauge("hplus_sync_lag_seconds", "Age of a hospital's oldest data", ["hospital_id"])
    SYNC_LAG.labels(hospital_id=h).set(lag)

and values computed at scrape time register a callback with `collect_with`. The names of
the gRPC metrics are those of the gRPC ecosystem's Prometheus middleware
(``grpc_server_handled_total`` …), so existing dashboards and alerts apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "RPC_METRICS",
    "RpcMetrics",
    "collect_with",
    "counter",
    "gauge",
    "histogram",
    "registry",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds; from a tunnel hop (~1 ms) to an HIS timeout (tens of seconds)."""

_made: dict[str, Any] = {}

M = TypeVar("M", Counter, Gauge, Histogram)


def registry() -> CollectorRegistry:
    """The process's registry (what ``/metrics`` serves)."""
    return REGISTRY


def _make(cls: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
    found = _made.get(name)
    if found is None:
        found = cls(name, doc, list(labels), registry=REGISTRY, **kw)
        _made[name] = found
    if not isinstance(found, cls):
        raise TypeError(f"metric {name} already registered as {type(found).__name__}")
    return found


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """The counter ``name`` (made on first use). ``name`` ends in ``_total`` by convention."""
    return _make(Counter, name.removesuffix("_total"), doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    """The gauge ``name`` (made on first use)."""
    return _make(Gauge, name, doc, labels)


def histogram(
    name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    """The histogram ``name`` (made on first use), latency buckets by default."""
    return _make(Histogram, name, doc, labels, buckets=tuple(buckets))


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def collect_with(collect: Callable[[], Iterable[Metric]]) -> Callable[[], None]:
    """Registers a scrape-time collector; returns the function that unregisters it.

    Use for values that live elsewhere (tunnels of a gateway, RTT, a queue's backlog):
    ``collect`` yields ``prometheus_client.core.GaugeMetricFamily`` and the like.
    """
    collector = _Callback(collect)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


class RpcMetrics:
    """The gRPC ecosystem's RPC metrics, server and client side, with cached label sets."""

    def __init__(self) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.server_started = counter(
            "grpc_server_started_total", "RPCs started on the server", labels
        )
        self.server_handled = counter(
            "grpc_server_handled_total", "RPCs completed on the server", [*labels, "grpc_code"]
        )
        self.server_seconds = histogram(
            "grpc_server_handling_seconds", "Server-side RPC latency", labels
        )
        self.client_started = counter(
            "grpc_client_started_total", "RPCs started by clients", labels
        )
        self.client_handled = counter(
            "grpc_client_handled_total", "RPCs completed by clients", [*labels, "grpc_code"]
        )
        self.client_seconds = histogram(
            "grpc_client_handling_seconds", "Client-side RPC latency", labels
        )
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._handled: dict[tuple[str, ...], Any] = {}

    @staticmethod
    def split(method: str) -> tuple[str, str]:
        """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
        _, _, rest = method.partition("/")
        service, _, name = rest.partition("/")
        return service or "unknown", name or "unknown"

    def started(self, side: str, kind: str, method: str) -> tuple[Any, str, str, str]:
        """Counts a started RPC; returns what `handled` needs."""
        key = (side, kind, method)
        found = self._children.get(key)
        if found is None:
            service, name = self.split(method)
            started, seconds = (
                (self.server_started, self.server_seconds)
                if side == "server"
                else (self.client_started, self.client_seconds)
            )
            found = (
                started.labels(kind, service, name),
                seconds.labels(kind, service, name),
            )
            self._children[key] = found
        found[0].inc()
        return found[1], side, kind, method

    def handled(self, token: tuple[Any, str, str, str], code: str, seconds: float) -> None:
        """Counts a completed RPC with its status code name and latency."""
        histogram_child, side, kind, method = token
        histogram_child.observe(seconds)
        key = (side, kind, method, code)
        child = self._handled.get(key)
        if child is None:
            service, name = self.split(method)
            metric = self.server_handled if side == "server" else self.client_handled
            child = self._handled[key] = metric.labels(kind, service, name, code)
        child.inc()


RPC_METRICS = RpcMetrics()
"""The process's RPC metrics (interceptors and tunnel hooks share them)."""
