"""``[payments]`` and ``[reconcile]`` settings, and the node's payment wiring."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
import pytest
from google.type import date_pb2

from cloud.config import NodeConfig, PaymentsConfig, ReconcileConfig, TlsMode
from cloud.gateway import INTERNAL_AUTH_KEY
from cloud.node import CloudNode
from cloud.payments import NOTIFY_PATH
from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
from mesh.config import ConfigError
from tools.pay_sim import PaySim


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_payments_are_off_by_default_and_a_file_sets_every_field(tmp_path: Path) -> None:
    assert not NodeConfig().payments.enabled
    assert NodeConfig().reconcile.daily_time == (2, 0)
    path = write(
        tmp_path,
        '[payments]\nchannel_url = "http://127.0.0.1:9000"\nmerchant_id = "1900000001"\n'
        'merchant_key_file = "keys/merchant.key"\nplatform_public_key_file = "keys/p.pem"\n'
        'notify_listen = "127.0.0.1:0"\ntimeout = 5\nnotify_max_body = 2048\n'
        '[reconcile]\ndaily_at = "03:30"\n',
    )
    config = NodeConfig.load(path=path, env={})
    assert config.payments.enabled
    assert config.payments.merchant_key_file == tmp_path / "keys" / "merchant.key"
    assert config.payments.timeout == 5.0
    assert config.reconcile.daily_time == (3, 30)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[payments]\nchannel_url = "http://x"\n', ":1: [payments] merchant_id: required"),
        ("[payments]\ntimeout = 0\n", ":2: [payments] timeout: must be > 0"),
        ('[payments]\nnotify_listen = "nope"\n', ":2: [payments] notify_listen: expected"),
        (
            '[payments]\nnotify_listen = "0.0.0.0:0"\nnotify_plaintext = true\n',
            ":3: [payments] notify_plaintext: for loopback only",
        ),
        ('[payments]\nchanel_url = "x"\n', ":2: [payments] chanel_url: unknown setting"),
        ('[reconcile]\ndaily_at = "25:00"\n', ":2: [reconcile] daily_at: expected HH:MM"),
    ],
)
def test_bad_settings_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=path, env={})
    assert str(info.value).startswith(str(path) + expected), str(info.value)


def test_plaintext_nodes_take_notifications_on_loopback_only() -> None:
    payments = PaymentsConfig(
        channel_url="http://127.0.0.1:1",
        merchant_id="m",
        merchant_key_file=Path("k"),
        platform_public_key_file=Path("p"),
        notify_listen="0.0.0.0:0",
    )
    with pytest.raises(ConfigError, match=r"payments\.notify_listen is 0\.0\.0\.0:0"):
        NodeConfig(tls_mode=TlsMode.OFF, payments=payments)
    with pytest.raises(ConfigError, match=r"reconcile\.daily_at"):
        ReconcileConfig(daily_at="2am")


def _internal(node: CloudNode) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    assert node.tls is not None
    creds = grpc.ssl_channel_credentials(root_certificates=node.tls.ca_cert.read_bytes())
    secret = (node.config.data_dir / "cluster-secret").read_text().strip()
    channel = grpc.aio.secure_channel(f"localhost:{node.internal_port}", creds)
    return channel, ((INTERNAL_AUTH_KEY, secret),)


async def test_a_node_without_a_channel_refuses_to_reconcile(tmp_path: Path) -> None:
    cfg = NodeConfig(listen="127.0.0.1:0", internal_listen="127.0.0.1:0", data_dir=tmp_path)
    async with CloudNode(cfg) as node:
        assert node.payments is None
        assert node.payment_notify is None
        channel, metadata = _internal(node)
        async with channel:
            stub = operations_pb2_grpc.OperationsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Reconcile(
                    operations_pb2.ReconcileRequest(
                        business_date=date_pb2.Date(year=2026, month=12, day=5)
                    ),
                    metadata=metadata,
                    timeout=10,
                )
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Reconcile(
                    operations_pb2.ReconcileRequest(business_date=date_pb2.Date(year=2026)),
                    metadata=metadata,
                    timeout=10,
                )
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_node_with_a_channel_serves_https_notifications(tmp_path: Path) -> None:
    async with PaySim(path=tmp_path / "pay.db") as sim:
        key, public = sim.write_keys(tmp_path / "keys")
        cfg = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=tmp_path / "node",
            payments=PaymentsConfig(
                channel_url=sim.base_url,
                merchant_id=sim.merchant_id,
                merchant_key_file=key,
                platform_public_key_file=public,
            ),
        )
        async with CloudNode(cfg) as node:
            assert node.payment_notify is not None
            assert node.payment_notify.scheme == "https"
            assert node.tls is not None
            url = f"https://localhost:{node.payment_notify.port}{NOTIFY_PATH}"
            import ssl

            context = ssl.create_default_context(cafile=str(node.tls.ca_cert))
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=b"{}", ssl=context) as resp,
            ):
                assert resp.status == 401  # no signature headers
            assert node.payment_notify.refused == {"SIGNATURE_HEADERS_MISSING": 1}


async def test_a_node_with_a_too_open_merchant_key_does_not_start(tmp_path: Path) -> None:
    from cloud.payments import PaymentKeyError

    async with PaySim(path=tmp_path / "pay.db") as sim:
        key, public = sim.write_keys(tmp_path / "keys")
        key.chmod(0o644)
        cfg = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=tmp_path / "node",
            payments=PaymentsConfig(
                channel_url=sim.base_url,
                merchant_id=sim.merchant_id,
                merchant_key_file=key,
                platform_public_key_file=public,
            ),
        )
        with pytest.raises(PaymentKeyError, match="readable by others"):
            async with CloudNode(cfg):
                pass
