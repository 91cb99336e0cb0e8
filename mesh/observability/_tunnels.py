"""Scrape-time metrics of gateways' tunnels: count, RTT, calls in flight.

One collector serves every gateway of the process (a test may run several nodes in one),
each labelled with its node id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from mesh.observability._metrics import collect_with
from mesh.tunnel import TunnelGateway

__all__ = ["watch_gateway"]

_WATCHED: dict[int, tuple[TunnelGateway, str]] = {}
_registered: list[Callable[[], None]] = []


def _collect() -> Iterable[Metric]:
    tunnels = GaugeMetricFamily("hplus_tunnels", "Live tunnels held by a node", labels=["node"])
    rtt = GaugeMetricFamily(
        "hplus_tunnel_rtt_seconds",
        "Latest ping round-trip time of a tunnel",
        labels=["node", "hospital_id", "connection"],
    )
    flight = GaugeMetricFamily(
        "hplus_tunnel_in_flight_calls",
        "Calls in flight on a tunnel",
        labels=["node", "hospital_id", "connection"],
    )
    for gateway, node_id in list(_WATCHED.values()):
        live = 0
        for session in gateway.sessions():
            if session.is_closed or not session.ready.is_set():
                continue
            live += 1
            labels = [node_id, session.hello.hospital_id, str(session.hello.connection_index)]
            if session.rtt is not None:
                rtt.add_metric(labels, session.rtt)
            flight.add_metric(labels, session.active_streams)
        tunnels.add_metric([node_id], live)
    return [tunnels, rtt, flight]


def watch_gateway(gateway: TunnelGateway, *, node_id: str) -> Callable[[], None]:
    """Adds ``gateway`` to the tunnel gauges; returns the function that removes it.

    ``hplus_tunnels`` (live tunnels of a node), ``hplus_tunnel_rtt_seconds`` and
    ``hplus_tunnel_in_flight_calls`` per hospital and connection index.
    """
    if not _registered:
        _registered.append(collect_with(_collect))
    key = id(gateway)
    _WATCHED[key] = (gateway, node_id)
    return lambda: _WATCHED.pop(key, None) and None
