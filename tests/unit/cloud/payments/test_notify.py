"""The notification endpoint refuses what it cannot believe, and says why in the log."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.payments import (
    NOTIFY_PATH,
    MerchantKeys,
    NotificationVerifier,
    NotifyServer,
    PaymentEvidence,
    RefundEvidence,
    TradeState,
    platform_serial,
)
from tests.support.payments import Inbox

MERCHANT_KEY = b"k" * 32
PLATFORM = Ed25519PrivateKey.generate()


def _resource(obj: dict[str, object], key: bytes = MERCHANT_KEY) -> dict[str, str]:
    nonce = secrets.token_hex(6)
    cipher = AESGCM(key).encrypt(nonce.encode(), json.dumps(obj).encode(), b"transaction")
    return {
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(cipher).decode(),
        "associated_data": "transaction",
        "nonce": nonce,
    }


def _body(out_trade_no: str = "ORD0000001", key: bytes = MERCHANT_KEY) -> bytes:
    return json.dumps(
        {
            "id": "EV000001",
            "event_type": "TRANSACTION.SUCCESS",
            "resource_type": "encrypt-resource",
            "resource": _resource(
                {
                    "out_trade_no": out_trade_no,
                    "transaction_id": "4200000001",
                    "trade_state": "SUCCESS",
                    "success_time": "2026-12-06T10:00:00+08:00",
                    "amount": {"total": 4900},
                },
                key,
            ),
        }
    ).encode()


def _headers(
    body: bytes,
    *,
    key: Ed25519PrivateKey = PLATFORM,
    serial: str | None = None,
    ts: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    nonce = nonce or secrets.token_hex(16)
    signature = key.sign(stamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n")
    return {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": serial or platform_serial(PLATFORM.public_key()),
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Content-Type": "application/json",
    }


class Endpoint:
    def __init__(self, server: NotifyServer, inbox: Inbox, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.inbox = inbox
        self.session = session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{NOTIFY_PATH}"

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    inbox = Inbox()
    keys = MerchantKeys(merchant_key=MERCHANT_KEY, platform_key=PLATFORM.public_key())
    state = {"fail": False}

    async def dispatch(evidence: PaymentEvidence | RefundEvidence) -> None:
        if state["fail"]:
            state["fail"] = False
            raise RuntimeError("the coordinator's database is down")
        await inbox(evidence)

    server = NotifyServer(
        NotificationVerifier(keys, window=300.0),
        dispatch,
        host="127.0.0.1",
        port=0,
        ssl_context=None,
        max_body=4096,
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            ep = Endpoint(server, inbox, session)
            ep.state = state  # type: ignore[attr-defined]
            yield ep
    finally:
        await server.close()


async def test_a_valid_notification_reaches_the_listeners(endpoint: Endpoint) -> None:
    body = _body()
    assert await endpoint.post(body, _headers(body)) == 204
    (evidence,) = await endpoint.inbox.wait(1)
    assert isinstance(evidence, PaymentEvidence)
    assert (evidence.state, evidence.amount_fen, evidence.source) == (
        TradeState.SUCCESS,
        4900,
        "notification",
    )


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("signature", "SIGNATURE_INVALID"),
        ("other_key", "SIGNATURE_INVALID"),
        ("unknown_serial", "UNKNOWN_PLATFORM_KEY"),
        ("stale", "TIMESTAMP_OUTSIDE_WINDOW"),
        ("future", "TIMESTAMP_OUTSIDE_WINDOW"),
        ("no_headers", "SIGNATURE_HEADERS_MISSING"),
        ("body_changed", "SIGNATURE_INVALID"),
    ],
)
async def test_refused_notifications_are_401_logged_and_never_dispatched(
    endpoint: Endpoint, tamper: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = _body()
    headers = _headers(body)
    if tamper == "signature":
        raw = bytearray(base64.b64decode(headers["Wechatpay-Signature"]))
        raw[5] ^= 0x40
        headers["Wechatpay-Signature"] = base64.b64encode(bytes(raw)).decode()
    elif tamper == "other_key":
        headers = _headers(body, key=Ed25519PrivateKey.generate())
    elif tamper == "unknown_serial":
        other = Ed25519PrivateKey.generate()
        headers = _headers(body, key=other, serial=platform_serial(other.public_key()))
    elif tamper == "stale":
        headers = _headers(body, ts=int(time.time()) - 301)
    elif tamper == "future":
        headers = _headers(body, ts=int(time.time()) + 301)
    elif tamper == "no_headers":
        headers = {"Content-Type": "application/json"}
    else:
        body = _body("ORD0000666")
    assert await endpoint.post(body, headers) == 401
    assert endpoint.server.refused == {reason: 1}
    assert endpoint.inbox.items == []
    assert f"refused (401 {reason})" in caplog.text


async def test_a_replayed_notification_is_refused(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    body = _body()
    headers = _headers(body)
    assert await endpoint.post(body, headers) == 204
    assert await endpoint.post(body, headers) == 401
    assert endpoint.server.refused == {"REPLAYED": 1}
    assert len(endpoint.inbox.items) == 1
    assert "REPLAYED" in caplog.text


async def test_an_oversized_body_is_413_and_logged(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"{" + b" " * 5000 + b"}"
    assert await endpoint.post(body, _headers(body)) == 413
    assert endpoint.server.refused == {"BODY_TOO_LARGE": 1}
    assert "BODY_TOO_LARGE" in caplog.text


async def test_a_resource_under_another_merchant_key_is_400(endpoint: Endpoint) -> None:
    body = _body(key=b"z" * 32)
    assert await endpoint.post(body, _headers(body)) == 400
    assert endpoint.server.refused == {"RESOURCE_UNDECRYPTABLE": 1}
    garbage = b'{"resource": 1}'
    assert await endpoint.post(garbage, _headers(garbage)) == 400
    assert endpoint.server.refused["BODY_MALFORMED"] == 1
    assert endpoint.inbox.items == []


async def test_a_failing_listener_answers_500_so_the_channel_retries(endpoint: Endpoint) -> None:
    endpoint.state["fail"] = True  # type: ignore[attr-defined]
    body = _body()
    assert await endpoint.post(body, _headers(body)) == 500
    # The channel's retry carries a new timestamp and nonce: accepted.
    assert await endpoint.post(body, _headers(body)) == 204
    assert len(await endpoint.inbox.wait(1)) == 1


async def test_duplicates_with_fresh_nonces_are_each_dispatched(endpoint: Endpoint) -> None:
    body = _body()
    for _ in range(3):
        assert await endpoint.post(body, _headers(body)) == 204
    items = await endpoint.inbox.wait(3)
    assert len(set(items)) == 1  # the same evidence three times: the coordinator dedupes


def test_keys_files_are_checked(tmp_path: Path) -> None:
    from cloud.payments import PaymentKeyError, load_keys

    key = tmp_path / "merchant.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    pub = tmp_path / "platform.pem"
    pub.write_text("not a key")
    with pytest.raises(PaymentKeyError, match="readable by others"):
        load_keys(key, pub)
    key.chmod(0o600)
    with pytest.raises(PaymentKeyError, match="not a PEM public key"):
        load_keys(key, pub)
    key.write_bytes(b"short")
    with pytest.raises(PaymentKeyError, match="32 bytes"):
        load_keys(key, pub)
    with pytest.raises(PaymentKeyError, match="cannot read"):
        load_keys(tmp_path / "missing.key", pub)


async def test_a_flood_holds_a_bounded_number_of_requests(caplog: pytest.LogCaptureFixture) -> None:
    keys = MerchantKeys(merchant_key=MERCHANT_KEY, platform_key=PLATFORM.public_key())
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(evidence: PaymentEvidence | RefundEvidence) -> None:
        entered.set()
        await release.wait()

    server = NotifyServer(
        NotificationVerifier(keys),
        slow,
        host="127.0.0.1",
        port=0,
        ssl_context=None,
        max_in_flight=1,
    )
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}{NOTIFY_PATH}"
        async with aiohttp.ClientSession() as session:

            async def post() -> int:
                body = _body()
                async with session.post(url, data=body, headers=_headers(body)) as resp:
                    return resp.status

            first = asyncio.ensure_future(post())
            await entered.wait()
            assert await post() == 503
            release.set()
            assert await first == 204
        assert server.refused == {"BUSY": 1}
        assert "BUSY" in caplog.text
    finally:
        await server.close()


async def test_a_slow_body_is_408() -> None:
    keys = MerchantKeys(merchant_key=MERCHANT_KEY, platform_key=PLATFORM.public_key())
    inbox = Inbox()
    server = NotifyServer(
        NotificationVerifier(keys),
        inbox,
        host="127.0.0.1",
        port=0,
        ssl_context=None,
        read_timeout=0.2,
    )
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST {NOTIFY_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            status = await reader.readline()
        assert b" 408 " in status
        writer.close()
        assert server.refused == {"BODY_TOO_SLOW": 1}
        assert inbox.items == []
    finally:
        await server.close()
