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

import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "RPC_METRICS",
    "RpcCounts",
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


_OK = grpc.StatusCode.OK


class RpcCounts:
    """Counts of one (side, type, method): plain integers, read at scrape time."""

    __slots__ = ("buckets", "codes", "count", "labels", "ok", "started", "total")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = 0
        """RPCs started (callers bump it directly: it is the hot path)."""
        self.ok = 0
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """Counts a completed RPC with its status and latency."""
        if code is _OK:
            self.ok += 1
        else:
            name = code.name
            self.codes[name] = self.codes.get(name, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds

    def by_code(self) -> dict[str, int]:
        """Completed RPCs by status code name."""
        out = dict(self.codes)
        if self.ok:
            out["OK"] = out.get("OK", 0) + self.ok
        return out


class RpcMetrics:
    """The gRPC ecosystem's RPC metrics, server and client side.

    ``grpc_{server,client}_started_total``, ``grpc_{server,client}_handled_total`` (with
    ``grpc_code``) and ``grpc_{server,client}_handling_seconds`` (histogram), labelled
    ``grpc_type``, ``grpc_service``, ``grpc_method``. Counted in plain integers on the
    call path (every call of a process passes here: a locked metric object per increment
    would cost more than the rest of the observability) and turned into Prometheus
    families when scraped. A hook keeps the `table` of its side and type and finds a
    method's `RpcCounts` there with one dictionary lookup.
    """

    def __init__(self) -> None:
        self._rpcs: dict[tuple[str, str, str], RpcCounts] = {}
        self._tables: dict[tuple[str, str], dict[str, RpcCounts]] = {}
        collect_with(self._collect)

    @staticmethod
    def split(method: str) -> tuple[str, str]:
        """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
        _, _, rest = method.partition("/")
        service, _, name = rest.partition("/")
        return service or "unknown", name or "unknown"

    def table(self, side: str, kind: str) -> dict[str, RpcCounts]:
        """The counts of one side and type by method (filled by `counts`)."""
        found = self._tables.get((side, kind))
        if found is None:
            found = self._tables[(side, kind)] = {}
        return found

    def counts(self, side: str, kind: str, method: str) -> RpcCounts:
        """The counts of one (side, type, method), made on first use."""
        key = (side, kind, method)
        rpc = self._rpcs.get(key)
        if rpc is None:
            rpc = self._rpcs[key] = RpcCounts(key)
            self.table(side, kind)[method] = rpc
        return rpc

    def started(self, side: str, kind: str, method: str) -> RpcCounts:
        """Counts a started RPC; returns what `handled` needs."""
        rpc = self.counts(side, kind, method)
        rpc.started += 1
        return rpc

    def handled(self, rpc: RpcCounts, code: str, seconds: float) -> None:
        """Counts a completed RPC with its status code name and latency."""
        rpc.codes[code] = rpc.codes.get(code, 0) + 1
        rpc.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        rpc.count += 1
        rpc.total += seconds

    def _collect(self) -> Iterable[Metric]:
        out: list[Metric] = []
        for side in ("server", "client"):
            labels = ["grpc_type", "grpc_service", "grpc_method"]
            started = CounterMetricFamily(
                f"grpc_{side}_started", f"RPCs started ({side} side)", labels=labels
            )
            handled = CounterMetricFamily(
                f"grpc_{side}_handled",
                f"RPCs completed ({side} side)",
                labels=[*labels, "grpc_code"],
            )
            seconds = HistogramMetricFamily(
                f"grpc_{side}_handling_seconds", f"RPC latency ({side} side)", labels=labels
            )
            for (where, kind, method), rpc in list(self._rpcs.items()):
                if where != side:
                    continue
                service, name = self.split(method)
                values = [kind, service, name]
                started.add_metric(values, rpc.started)
                for code, count in rpc.by_code().items():
                    handled.add_metric([*values, code], count)
                cumulative, buckets = 0, []
                for bound, n in zip(
                    [*(str(b) for b in LATENCY_BUCKETS), "+Inf"], rpc.buckets, strict=True
                ):
                    cumulative += n
                    buckets.append((bound, cumulative))
                seconds.add_metric(values, buckets, rpc.total)
            out += [started, handled, seconds]
        return out


RPC_METRICS = RpcMetrics()
"""The process's RPC metrics (interceptors and tunnel hooks share them)."""
