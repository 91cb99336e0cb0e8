"""The /metrics endpoint: content, bearer token, refusal of an unauthenticated exposure."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mesh.observability import (
    RPC_METRICS,
    MetricsServer,
    ObservabilityConfig,
    counter,
    gauge,
    histogram,
)


async def _get(port: int, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_metrics_are_served_with_grpc_ecosystem_names() -> None:
    token = RPC_METRICS.started("server", "unary", "/hplus.test.v1.Probe/Check")
    RPC_METRICS.handled(token, "NOT_FOUND", 0.004)
    # Other parts register theirs in one line; the same name gives the same metric.
    lag = gauge("hplus_test_sync_lag_seconds", "Test gauge", ["hospital_id"])
    assert gauge("hplus_test_sync_lag_seconds", "Test gauge", ["hospital_id"]) is lag
    lag.labels(hospital_id="h-1").set(12.5)
    assert counter("hplus_test_total", "Test counter") is counter("hplus_test_total", "x")
    with pytest.raises(TypeError, match="already registered as Counter"):
        histogram("hplus_test", "clash")
    server = MetricsServer("127.0.0.1:0")
    await server.start()
    try:
        status, body = await _get(server.port)
    finally:
        await server.stop()
    assert status == 200
    assert (
        'grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="Check",'
        'grpc_service="hplus.test.v1.Probe",grpc_type="unary"}' in body
    )
    assert "grpc_server_handling_seconds_bucket" in body
    assert 'hplus_test_sync_lag_seconds{hospital_id="h-1"} 12.5' in body


async def test_a_token_file_makes_the_endpoint_require_the_bearer_token(tmp_path: Path) -> None:
    secret = tmp_path / "metrics-token"
    secret.write_text("s3cret-token\n")
    server = MetricsServer("127.0.0.1:0", token_file=secret)
    await server.start()
    try:
        assert (await _get(server.port))[0] == 401
        assert (await _get(server.port, "wrong"))[0] == 401
        status, body = await _get(server.port, "s3cret-token")
        assert status == 200
        assert "grpc_server_started_total" in body
    finally:
        await server.stop()


def test_off_loopback_metrics_need_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a loopback address: set metrics_token_file"):
        MetricsServer("0.0.0.0:9100")
    with pytest.raises(ValueError, match=r"metrics_listen: 0\.0\.0\.0:9100 is not a loopback"):
        ObservabilityConfig(metrics_listen="0.0.0.0:9100")
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        MetricsServer("0.0.0.0:9100", token_file=empty)
    ObservabilityConfig(metrics_listen="0.0.0.0:9100", metrics_token_file=empty)
    ObservabilityConfig(metrics_listen="[::1]:0")
    with pytest.raises(ValueError, match="metrics_listen"):
        ObservabilityConfig(metrics_listen="nonsense")
