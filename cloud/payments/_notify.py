r"""The notification endpoint: where the channel tells us a payment or refund happened.

Every notification is checked before anything believes it: body size (``notify_max_body``,
else 413), the signature headers, the timestamp within ``notify_window`` of our clock, the
nonce not seen within that window (a replay: 401), the platform key's serial, the Ed25519
signature over ``timestamp\nnonce\nbody\n``, then the AES-256-GCM resource decrypted with
the merchant key. A refusal is answered 4xx with a log line naming the reason (and never
reaches the listeners); the channel retries a notification it did not get a 2xx for.

A verified notification's evidence goes to the channel's listeners; duplicates (the
channel's retries) are passed on too: the coordinator is idempotent by the evidence, and an
answer lost on the way back must not lose the evidence. The answer is 204 once every
listener returned, 500 when one failed (the channel delivers again).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.payments._channel import payment_evidence, refund_evidence
from cloud.payments._keys import MerchantKeys
from cloud.payments._model import PaymentEvidence, RefundEvidence

__all__ = ["NOTIFY_PATH", "NotificationRefused", "NotificationVerifier", "NotifyServer"]

log = logging.getLogger(__name__)

NOTIFY_PATH = "/pay/notify"
"""Path of the notification endpoint."""

_MAX_NONCES = 100_000


class NotificationRefused(Exception):
    """A notification we do not believe; ``status`` is the HTTP answer, ``reason`` the why."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


class NotificationVerifier:
    """Checks a notification's headers and body and returns its evidence.

    Args:
        keys: the merchant key and the platform's public key.
        window: seconds a timestamp may be off our clock; nonces are remembered this long.
        clock: Unix time source (tests).
    """

    def __init__(
        self, keys: MerchantKeys, *, window: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = keys
        self._serial = keys.serial
        self._window = window
        self._clock = clock
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()

    def verify(self, headers: Any, body: bytes) -> PaymentEvidence | RefundEvidence:
        """The evidence of a notification, once every check passed.

        Raises:
            NotificationRefused: naming the check that failed.
        """
        ts = headers.get("Wechatpay-Timestamp", "")
        nonce = headers.get("Wechatpay-Nonce", "")
        serial = headers.get("Wechatpay-Serial", "")
        signature = headers.get("Wechatpay-Signature", "")
        if not (ts and nonce and serial and signature):
            raise NotificationRefused(401, "SIGNATURE_HEADERS_MISSING", "Wechatpay-* headers")
        if len(nonce) > 64:
            raise NotificationRefused(401, "NONCE_TOO_LONG", f"{len(nonce)} characters")
        try:
            stamp = int(ts)
        except ValueError:
            raise NotificationRefused(401, "TIMESTAMP_INVALID", repr(ts[:20])) from None
        now = self._clock()
        if abs(now - stamp) > self._window:
            raise NotificationRefused(
                401, "TIMESTAMP_OUTSIDE_WINDOW", f"{int(now - stamp)} s off our clock"
            )
        if serial != self._serial:
            raise NotificationRefused(401, "UNKNOWN_PLATFORM_KEY", f"serial {serial[:32]!r}")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
            self._keys.platform_key.verify(
                raw_signature, ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
            )
        except (binascii.Error, ValueError, InvalidSignature):
            raise NotificationRefused(401, "SIGNATURE_INVALID", "does not verify") from None
        self._forget(now)
        if nonce in self._nonces:
            raise NotificationRefused(401, "REPLAYED", f"nonce {nonce[:16]}… seen before")
        self._nonces[nonce] = now
        if len(self._nonces) > _MAX_NONCES:
            self._nonces.popitem(last=False)
        return self._evidence(body)

    def _forget(self, now: float) -> None:
        while self._nonces and next(iter(self._nonces.values())) < now - self._window:
            self._nonces.popitem(last=False)

    def _evidence(self, body: bytes) -> PaymentEvidence | RefundEvidence:
        try:
            doc = json.loads(body)
            resource = doc["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise NotificationRefused(
                    400, "ALGORITHM_UNSUPPORTED", str(resource.get("algorithm"))[:40]
                )
            plain = AESGCM(self._keys.merchant_key).decrypt(
                str(resource["nonce"]).encode(),
                base64.b64decode(resource["ciphertext"]),
                str(resource.get("associated_data", "")).encode(),
            )
            obj = json.loads(plain)
            event = str(doc.get("event_type", ""))
            if event.startswith("TRANSACTION."):
                return payment_evidence(obj, source="notification")
            if event.startswith("REFUND."):
                return refund_evidence(obj, source="notification")
            raise NotificationRefused(400, "EVENT_UNKNOWN", event[:40])
        except NotificationRefused:
            raise
        except InvalidTag:
            raise NotificationRefused(400, "RESOURCE_UNDECRYPTABLE", "AEAD tag mismatch") from None
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise NotificationRefused(400, "BODY_MALFORMED", type(err).__name__) from None


Dispatch = Callable[[PaymentEvidence | RefundEvidence], Awaitable[None]]


class NotifyServer:
    """The HTTP(S) server of the notification endpoint.

    Args:
        verifier: checks notifications.
        dispatch: hands verified evidence on (`WechatPayChannel.dispatch`).
        host: interface.
        port: port (0: any free one).
        ssl_context: TLS (None: plaintext; the config allows that on loopback only).
        max_body: largest body accepted, bytes.
        max_in_flight: notifications handled at once; more are answered 503 at once (the
            channel retries), so a flood holds a bounded number of requests.
        read_timeout: seconds a body may take to arrive (a slow sender gets 408).
    """

    def __init__(
        self,
        verifier: NotificationVerifier,
        dispatch: Dispatch,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        max_body: int = 65536,
        max_in_flight: int = 64,
        read_timeout: float = 10.0,
    ) -> None:
        self._in_flight = 0
        self._max_in_flight = max_in_flight
        self._read_timeout = read_timeout
        self._verifier = verifier
        self._dispatch = dispatch
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._max_body = max_body
        self._runner: web.AppRunner | None = None
        self.accepted = 0
        """Notifications verified and handed on."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Refused notifications by reason."""

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "http" if self._ssl is None else "https"

    async def start(self) -> None:
        """Binds and serves."""
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post(NOTIFY_PATH, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stops serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refuse(self, request: web.Request, status: int, reason: str, detail: str) -> web.Response:
        self.refused[reason] += 1
        log.warning(
            "payment notification from %s refused (%d %s): %s",
            request.remote,
            status,
            reason,
            detail,
        )
        return web.json_response({"code": "FAIL", "message": reason}, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        if self._in_flight >= self._max_in_flight:
            return self._refuse(
                request, 503, "BUSY", f"{self._in_flight} notifications in flight already"
            )
        self._in_flight += 1
        try:
            return await self._checked(request)
        finally:
            self._in_flight -= 1

    async def _checked(self, request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > self._max_body:
            return self._refuse(
                request, 413, "BODY_TOO_LARGE", f"{length} bytes > {self._max_body}"
            )
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "BODY_TOO_LARGE", f"over {self._max_body} bytes")
        except TimeoutError:
            return self._refuse(
                request, 408, "BODY_TOO_SLOW", f"not received in {self._read_timeout:g} s"
            )
        try:
            evidence = self._verifier.verify(request.headers, body)
        except NotificationRefused as err:
            return self._refuse(request, err.status, err.reason, err.detail)
        try:
            await self._dispatch(evidence)
        except Exception:
            log.exception("payment notification: a listener failed; the channel will retry")
            return web.json_response({"code": "FAIL", "message": "retry"}, status=500)
        self.accepted += 1
        return web.Response(status=204)
