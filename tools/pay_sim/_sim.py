r"""The payment channel simulator: a WeChat-Pay-v3-like merchant API over HTTP, with faults.

What it keeps of WeChat Pay API v3: the JSAPI order (``out_trade_no``, amount in fen,
description, payer openid, ``notify_url``) answered with a ``prepay_id``; query and close
by out-trade number; refunds by out-refund number and their query; ``trade_state`` and
refund ``status`` values; asynchronous notifications whose body carries an
AEAD_AES_256_GCM-encrypted ``resource`` (key: the merchant's 32-byte API key) and whose
headers ``Wechatpay-Timestamp``, ``Wechatpay-Nonce``, ``Wechatpay-Serial`` and
``Wechatpay-Signature`` sign ``timestamp\nnonce\nbody\n`` with the platform's key; retried
deliveries until the merchant answers 2xx; a daily trade bill (CSV, UTC+8 business date).

What it drops or changes: the platform signs with Ed25519 (``Wechatpay-Signature-Type:
HPLUS-ED25519``) instead of RSA-SHA256 with an X.509 certificate, and merchant requests are
authenticated with HMAC-SHA256 under the merchant key (``Authorization: HPLUS-HMAC-SHA256
mchid=...,nonce_str=...,timestamp=...,signature=...`` over ``METHOD\nPATH\ntimestamp\nnonce
\nbody\n``) instead of the merchant's RSA certificate; answers are not signed; the trade
bill is served directly (no ``download_url`` hop, no gzip); a close of an unknown order
records it closed (a late prepay for it is refused), where WeChat answers
ORDER_NOT_EXIST; no coupons, fees or currency other than CNY.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mesh.files import replace_private_file
from tools.pay_sim._faults import (
    Fault,
    InvalidSignature,
    NotificationDelayed,
    NotificationDuplicated,
    NotificationLost,
    RefundDelayed,
    TimeoutAfterCommit,
    fault_from_json,
    fault_to_json,
    validate,
)
from tools.pay_sim._store import CST, NotificationRow, RefundRow, SimStore, TradeRow

__all__ = ["AUTH_SCHEME", "SIGNATURE_TYPE", "STATEMENT_COLUMNS", "PaySim", "sign_request"]

_log = logging.getLogger(__name__)

AUTH_SCHEME = "HPLUS-HMAC-SHA256"
"""Scheme of the merchant's ``Authorization`` header."""
SIGNATURE_TYPE = "HPLUS-ED25519"
"""``Wechatpay-Signature-Type`` of notifications."""
STATEMENT_COLUMNS = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "货币种类",
    "应结订单金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "退款状态",
    "商品名称",
)
"""Columns of the trade bill (a subset of WeChat's ``ALL`` bill, in its order)."""

_MAX_BODY = 64 * 1024
_WINDOW = 300.0
_OUT_NO = re.compile(r"^[A-Za-z0-9_\-|*]{6,32}$")
_AUTH = re.compile(r'(\w+)="([^"]*)"')


def sign_request(
    key: bytes, mchid: str, method: str, path: str, body: str, *, timestamp: int | None = None
) -> str:
    """The ``Authorization`` header of a merchant request.

    Args:
        key: the merchant key (32 bytes).
        mchid: the merchant id.
        method: HTTP method.
        path: path with query string.
        body: the request body ("" for none).
        timestamp: Unix seconds (default now).

    Returns:
        The header value.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(16)
    message = f"{method}\n{path}\n{ts}\n{nonce}\n{body}\n".encode()
    signature = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    return (
        f'{AUTH_SCHEME} mchid="{mchid}",nonce_str="{nonce}",timestamp="{ts}",'
        f'signature="{signature}"'
    )


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, code, message)


class PaySim:
    """A simulated payment channel, in process (``async with PaySim() as sim``) or as a process.

    Args:
        path: SQLite file of its state (None: in memory, lost at stop). A restart on the same
            file keeps payments, refunds, pending notifications and the keys.
        host: interface to listen on.
        port: port (0: any free one).
        merchant_id: the one merchant it serves.
        app_id: the merchant's app id (echoed in answers and the bill).
        merchant_key: the merchant's 32-byte API key; default: the stored one, else a new one.
        notify_retry: seconds between delivery attempts of a notification the merchant did
            not take (WeChat: 15 s, 15 s, 30 s, 3 min, ... over a day); after the last one
            it is given up (``failed``).
        notify_ca: a CA file to trust for ``https`` notify URLs (the node's development CA).
        clock: source of the current time (aware), for business dates in tests.
    """

    def __init__(
        self,
        *,
        path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        merchant_id: str = "1900000001",
        app_id: str = "wxhplus0000000001",
        merchant_key: bytes | None = None,
        notify_retry: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 15.0),
        notify_ca: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._path = path
        self._host = host
        self._port = port
        self.merchant_id = merchant_id
        self.app_id = app_id
        self._given_key = merchant_key
        self._retry = notify_retry
        self._notify_ca = notify_ca
        self._clock = clock or (lambda: dt.datetime.now(CST))
        self._store: SimStore | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()
        self._faults: list[list[Any]] = []
        """[fault, uses left] (RefundDelayed: uses left is ignored)."""
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.deliveries: list[tuple[str, int]] = []
        """(notification id, HTTP status or 0 for no answer) of every delivery attempt."""
        self.merchant_key = b""
        self._platform_key: Ed25519PrivateKey | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Opens the state, starts the HTTP server and the delivery loop."""
        self._closing.clear()
        store = self._store = SimStore(self._path)
        key = self._given_key or (
            base64.b64decode(stored) if (stored := store.meta("merchant_key")) else None
        )
        if key is None:
            key = secrets.token_urlsafe(24).encode()[:32]
        if len(key) != 32:
            raise ValueError("merchant_key: must be 32 bytes (AEAD_AES_256_GCM key)")
        self.merchant_key = key
        store.set_meta("merchant_key", base64.b64encode(key).decode())
        pem = store.meta("platform_key")
        if pem is None:
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            store.set_meta("platform_key", pem)
        loaded = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(loaded, Ed25519PrivateKey)
        self._platform_key = loaded
        ssl_context: ssl.SSLContext | bool = True
        if self._notify_ca is not None:
            ssl_context = ssl.create_default_context(cafile=str(self._notify_ca))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=5.0),
            connector=aiohttp.TCPConnector(ssl=ssl_context),
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="pay-sim-ticker")

    async def stop(self) -> None:
        """Stops serving and delivering; the state stays in its file."""
        self._closing.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> SimStore:
        """The state (started simulators only)."""
        assert self._store is not None, "start the simulator first"
        return self._store

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the merchant and control APIs."""
        return f"http://{self._host}:{self._port}"

    @property
    def platform_public_key_pem(self) -> bytes:
        """The platform's public key (PEM): what the merchant verifies notifications with."""
        assert self._platform_key is not None
        return self._platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def platform_serial(self) -> str:
        """``Wechatpay-Serial``: the first 16 hex digits of the SHA-256 of the public key (DER)."""
        assert self._platform_key is not None
        der = self._platform_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()[:16].upper()

    def write_keys(self, directory: Path) -> tuple[Path, Path]:
        """Writes ``merchant.key`` (0600) and ``platform_public.pem`` for the merchant's config.

        Returns:
            (merchant key file, platform public key file).
        """
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "merchant.key"
        replace_private_file(key_file, self.merchant_key + b"\n")
        pub = directory / "platform_public.pem"
        pub.write_bytes(self.platform_public_key_pem)
        return key_file, pub

    # ------------------------------------------------------------------ control (tests, bench)

    async def pay(self, out_trade_no: str, *, fail: bool = False) -> str:
        """The payer pays (or the bank refuses, ``fail``): the state changes, a notification is due.

        Returns:
            The new trade state.

        Raises:
            LookupError: no such payment.
            ValueError: it is not payable (paid, closed, expired).
        """
        trade = self.store.trade(out_trade_no)
        if trade is None:
            raise LookupError(f"no payment {out_trade_no!r}")
        if trade.state not in ("NOTPAY", "USERPAYING"):
            raise ValueError(f"payment {out_trade_no!r} is {trade.state}, not payable")
        if fail:
            self.store.update_trade(out_trade_no, state="PAYERROR")
            await self._notify_changed()
            return "PAYERROR"
        now = self._clock()
        tx = f"4200{now:%Y%m%d}{self.store.next_serial('tx'):010d}"
        self.store.update_trade(out_trade_no, state="SUCCESS", transaction_id=tx, success_time=now)
        fresh = self.store.trade(out_trade_no)
        assert fresh is not None
        self._enqueue(
            "payment",
            out_trade_no,
            fresh.notify_url,
            "TRANSACTION.SUCCESS",
            self._trade_json(fresh),
        )
        await self._notify_changed()
        return "SUCCESS"

    async def inject(self, fault: Fault) -> None:
        """Puts a fault in force (see `tools.pay_sim` for each kind)."""
        validate(fault)
        self._faults.append([fault, getattr(fault, "times", 1)])

    async def clear_faults(self) -> None:
        """Ends every fault (held notifications and refunds stay held until released)."""
        self._faults.clear()

    def faults(self) -> list[Fault]:
        """The faults in force."""
        return [f for f, _ in self._faults]

    async def release_notifications(self) -> int:
        """Delivers every held notification now.

        Returns:
            How many were released.
        """
        held = self.store.notifications("held")
        for note in held:
            self.store.update_notification(note.id, state="pending", due_at=time.time())
        self._wake.set()
        return len(held)

    async def complete_refunds(self) -> int:
        """Lets every refund held ``PROCESSING`` succeed now.

        Returns:
            How many completed.
        """
        done = 0
        for refund in self.store.refunds():
            if refund.status == "PROCESSING":
                self._complete_refund(refund)
                done += 1
        await self._notify_changed()
        return done

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Waits until ``predicate()`` holds; it is checked after every change and delivery.

        Bound it with ``asyncio.timeout``.
        """
        async with self._changed:
            await self._changed.wait_for(predicate)

    def statement(self, business_date: dt.date) -> str:
        """The trade bill of one business date (UTC+8), as CSV text."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_COLUMNS)
        paid_total = refund_total = count = 0
        rows: list[tuple[dt.datetime, list[str]]] = []
        for trade in self.store.trades():
            when = trade.success_time
            if when is None or when.astimezone(CST).date() != business_date:
                continue
            count += 1
            paid_total += trade.amount
            rows.append((when, self._bill_row(trade, when, "SUCCESS", trade.amount, None)))
        for refund in self.store.refunds():
            when = refund.success_time
            if (
                refund.status != "SUCCESS"
                or when is None
                or when.astimezone(CST).date() != business_date
            ):
                continue
            refunded = self.store.trade(refund.out_trade_no)
            assert refunded is not None
            count += 1
            refund_total += refund.amount
            rows.append((when, self._bill_row(refunded, when, "REFUND", 0, refund)))
        for _, row in sorted(rows, key=lambda r: r[0]):
            writer.writerow(row)
        writer.writerow(("总交易单数", "应结订单总金额", "退款总金额"))
        writer.writerow((f"`{count}", f"`{_yuan(paid_total)}", f"`{_yuan(refund_total)}"))
        return out.getvalue()

    def _bill_row(
        self, trade: TradeRow, when: dt.datetime, state: str, paid: int, refund: RefundRow | None
    ) -> list[str]:
        values = [
            when.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S"),
            self.app_id,
            self.merchant_id,
            trade.transaction_id,
            trade.out_trade_no,
            trade.payer,
            "JSAPI",
            state,
            "CNY",
            _yuan(paid),
            refund.refund_id if refund else "",
            refund.out_refund_no if refund else "",
            _yuan(refund.amount) if refund else "0.00",
            "SUCCESS" if refund else "",
            trade.description,
        ]
        return [f"`{v}" for v in values]

    # ------------------------------------------------------------------ faults

    def _take(self, kind: type[Any], event: str | None = None, operation: str = "") -> Any:
        for entry in list(self._faults):
            fault, left = entry
            if not isinstance(fault, kind) or isinstance(fault, RefundDelayed):
                continue
            if event is not None and getattr(fault, "event", "any") not in ("any", event):
                continue
            if isinstance(fault, TimeoutAfterCommit) and operation not in fault.operations:
                continue
            entry[1] = left - 1
            if entry[1] <= 0:
                self._faults.remove(entry)
            return fault
        return None

    def _refund_delay(self) -> RefundDelayed | None:
        return next((f for f, _ in self._faults if isinstance(f, RefundDelayed)), None)

    # ------------------------------------------------------------------ notifications

    def _enqueue(self, event: str, ref: str, url: str, event_type: str, resource: Any) -> None:
        now = time.time()
        state, copies, bad = "pending", 1, ""
        due: float | None = now
        if self._take(NotificationLost, event) is not None:
            state, due = "lost", None
        else:
            delayed = self._take(NotificationDelayed, event)
            if delayed is not None:
                if delayed.seconds is None:
                    state, due = "held", None
                else:
                    due = now + delayed.seconds
            dup = self._take(NotificationDuplicated, event)
            if dup is not None:
                copies = dup.copies
            invalid = self._take(InvalidSignature, event)
            if invalid is not None:
                bad = invalid.mode
        note_id = f"EV{self.store.next_serial('event'):012d}"
        self.store.insert_notification(
            NotificationRow(
                id=note_id,
                event=event,
                ref=ref,
                url=url,
                event_type=event_type,
                resource=json.dumps(resource, ensure_ascii=False),
                state=state,
                attempts=0,
                due_at=due,
                copies=copies,
                bad_signature=bad,
                created_at=self._clock(),
            )
        )
        self._wake.set()

    async def _tick(self) -> None:
        """Delivers due notifications and completes due refunds, until stopped."""
        while not self._closing.is_set():
            self._wake.clear()
            now = time.time()
            for refund in self.store.refunds():
                if (
                    refund.status == "PROCESSING"
                    and refund.due_at is not None
                    and refund.due_at <= now
                ):
                    self._complete_refund(refund)
                    await self._notify_changed()
            for note in self.store.notifications("pending"):
                if note.due_at is not None and note.due_at <= now:
                    await self._deliver(note)
            waits = [
                r.due_at for r in self.store.refunds() if r.status == "PROCESSING" and r.due_at
            ] + [n.due_at for n in self.store.notifications("pending") if n.due_at]
            timeout = max(0.0, min(waits) - time.time()) if waits else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _deliver(self, note: NotificationRow) -> None:
        body = self._notification_body(note)
        ok = False
        for copy in range(note.copies):
            bad = note.bad_signature if note.attempts == 0 and copy == 0 else ""
            status = await self._post(note, body, bad)
            self.deliveries.append((note.id, status))
            ok = ok or (200 <= status < 300 and not bad)
        attempts = note.attempts + 1
        if ok:
            self.store.update_notification(note.id, state="delivered", attempts=attempts)
        elif attempts > len(self._retry):
            _log.warning("pay_sim: notification %s given up after %d attempts", note.id, attempts)
            self.store.update_notification(note.id, state="failed", attempts=attempts)
        else:
            due = time.time() + self._retry[attempts - 1]
            self.store.update_notification(note.id, attempts=attempts, due_at=due, copies=1)
        await self._notify_changed()

    def _notification_body(self, note: NotificationRow) -> str:
        nonce = secrets.token_urlsafe(9)[:12]
        associated = "transaction" if note.event == "payment" else "refund"
        ciphertext = AESGCM(self.merchant_key).encrypt(
            nonce.encode(), note.resource.encode(), associated.encode()
        )
        return json.dumps(
            {
                "id": note.id,
                "create_time": note.created_at.isoformat(timespec="seconds"),
                "resource_type": "encrypt-resource",
                "event_type": note.event_type,
                "summary": "支付成功" if note.event == "payment" else "退款成功",
                "resource": {
                    "original_type": associated,
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(ciphertext).decode(),
                    "associated_data": associated,
                    "nonce": nonce,
                },
            },
            ensure_ascii=False,
        )

    def _sign(self, message: bytes, bad: str) -> str:
        assert self._platform_key is not None
        key = Ed25519PrivateKey.generate() if bad == "other-key" else self._platform_key
        signature = bytearray(key.sign(message))
        if bad == "corrupt":
            signature[0] ^= 0x01
        return base64.b64encode(bytes(signature)).decode()

    async def _post(self, note: NotificationRow, body: str, bad: str) -> int:
        assert self._session is not None
        ts = str(int(time.time()))
        nonce = secrets.token_hex(16)
        signature = self._sign(f"{ts}\n{nonce}\n{body}\n".encode(), bad)
        headers = {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": self.platform_serial,
            "Wechatpay-Signature": signature,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }
        try:
            async with self._session.post(note.url, data=body.encode(), headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            _log.info("pay_sim: notification %s to %s not taken: %s", note.id, note.url, err)
            return 0

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ domain

    def _trade_json(self, trade: TradeRow) -> dict[str, Any]:
        state = trade.state
        out: dict[str, Any] = {
            "appid": self.app_id,
            "mchid": self.merchant_id,
            "out_trade_no": trade.out_trade_no,
            "transaction_id": trade.transaction_id,
            "trade_type": "JSAPI",
            "trade_state": state,
            "trade_state_desc": {
                "NOTPAY": "未支付",
                "SUCCESS": "支付成功",
                "REFUND": "转入退款",
                "CLOSED": "已关闭",
                "PAYERROR": "支付失败",
                "USERPAYING": "用户支付中",
            }.get(state, state),
            "payer": {"openid": trade.payer},
            "amount": {"total": trade.amount, "payer_total": trade.amount, "currency": "CNY"},
        }
        if trade.success_time is not None:
            out["success_time"] = trade.success_time.isoformat(timespec="seconds")
        return out

    def _refund_json(self, refund: RefundRow) -> dict[str, Any]:
        trade = self.store.trade(refund.out_trade_no)
        out: dict[str, Any] = {
            "mchid": self.merchant_id,
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": trade.transaction_id if trade else "",
            "out_trade_no": refund.out_trade_no,
            "status": refund.status,
            "refund_status": refund.status,
            "create_time": refund.create_time.isoformat(timespec="seconds"),
            "amount": {
                "total": refund.total,
                "refund": refund.amount,
                "payer_total": refund.total,
                "payer_refund": refund.amount,
                "currency": "CNY",
            },
        }
        if refund.success_time is not None:
            out["success_time"] = refund.success_time.isoformat(timespec="seconds")
        return out

    def _complete_refund(self, refund: RefundRow) -> None:
        self.store.update_refund(
            refund.out_refund_no, status="SUCCESS", success_time=self._clock(), due_at=None, held=0
        )
        self.store.update_trade(refund.out_trade_no, state="REFUND")
        fresh = self.store.refund(refund.out_refund_no)
        assert fresh is not None
        self._enqueue(
            "refund",
            fresh.out_refund_no,
            fresh.notify_url,
            "REFUND.SUCCESS",
            self._refund_json(fresh),
        )

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        out_no = _field(body, "out_trade_no", str)
        if not _OUT_NO.match(out_no):
            raise _Refused(400, "PARAM_ERROR", "out_trade_no: 6-32 letters, digits, _-|*")
        if _field(body, "mchid", str) != self.merchant_id:
            raise _Refused(400, "MCH_NOT_EXISTS", "mchid: not this merchant")
        amount = _field(_field(body, "amount", dict), "total", int)
        if not 0 < amount <= 10**9:
            raise _Refused(400, "PARAM_ERROR", "amount.total: must be within [1, 1e9] fen")
        description = _field(body, "description", str)
        if not 0 < len(description) <= 127:
            raise _Refused(400, "PARAM_ERROR", "description: 1-127 characters")
        payer = _field(_field(body, "payer", dict), "openid", str)
        notify_url = _field(body, "notify_url", str)
        if not notify_url.startswith(("http://", "https://")) or len(notify_url) > 256:
            raise _Refused(400, "PARAM_ERROR", "notify_url: an http(s) URL up to 256 characters")
        existing = self.store.trade(out_no)
        if existing is not None:
            if existing.state == "CLOSED":
                raise _Refused(400, "ORDER_CLOSED", "order closed")
            if existing.state in ("SUCCESS", "REFUND"):
                raise _Refused(400, "ORDERPAID", "order paid")
            if (existing.amount, existing.description, existing.payer) != (
                amount,
                description,
                payer,
            ):
                raise _Refused(400, "INVALID_REQUEST", "out_trade_no used with other parameters")
            return {"prepay_id": existing.prepay_id}
        now = self._clock()
        prepay_id = f"wx{now:%d%H%M%S}{secrets.token_hex(12)}"
        self.store.insert_trade(
            TradeRow(
                out_trade_no=out_no,
                prepay_id=prepay_id,
                transaction_id="",
                description=description,
                payer=payer,
                amount=amount,
                notify_url=notify_url,
                state="NOTPAY",
                created_at=now,
                expires_at=now + dt.timedelta(hours=2),
                success_time=None,
            )
        )
        return {"prepay_id": prepay_id}

    def _close(self, out_no: str) -> None:
        trade = self.store.trade(out_no)
        if trade is None:
            now = self._clock()
            self.store.insert_trade(
                TradeRow(out_no, "", "", "-", "-", 0, "", "CLOSED", now, now, None)
            )
            return
        if trade.state in ("SUCCESS", "REFUND"):
            raise _Refused(400, "ORDERPAID", "order paid")
        if trade.state != "CLOSED":
            self.store.update_trade(out_no, state="CLOSED")

    def _refund(self, body: dict[str, Any]) -> dict[str, Any]:
        out_trade_no = _field(body, "out_trade_no", str)
        out_refund_no = _field(body, "out_refund_no", str)
        if not _OUT_NO.match(out_refund_no):
            raise _Refused(400, "PARAM_ERROR", "out_refund_no: 6-32 letters, digits, _-|*")
        amount_obj = _field(body, "amount", dict)
        amount = _field(amount_obj, "refund", int)
        total = _field(amount_obj, "total", int)
        reason = str(body.get("reason", ""))[:80]
        notify_url = str(body.get("notify_url", ""))
        existing = self.store.refund(out_refund_no)
        if existing is not None:
            if (existing.out_trade_no, existing.amount) != (out_trade_no, amount):
                raise _Refused(400, "INVALID_REQUEST", "out_refund_no used with other parameters")
            return self._refund_json(existing)
        trade = self.store.trade(out_trade_no)
        if trade is None or trade.state not in ("SUCCESS", "REFUND"):
            if trade is None:
                raise _Refused(404, "RESOURCE_NOT_EXISTS", "order does not exist")
            raise _Refused(400, "INVALID_REQUEST", f"order is {trade.state}, not paid")
        if total != trade.amount:
            raise _Refused(400, "INVALID_REQUEST", "amount.total: differs from the order's")
        if amount <= 0:
            raise _Refused(400, "PARAM_ERROR", "amount.refund: must be > 0")
        taken = sum(r.amount for r in self.store.refunds(out_trade_no) if r.status != "CLOSED")
        if taken + amount > trade.amount:
            raise _Refused(403, "NOT_ENOUGH", "refund exceeds what is left of the order")
        delay = self._refund_delay()
        now = self._clock()
        row = RefundRow(
            out_refund_no=out_refund_no,
            out_trade_no=out_trade_no,
            refund_id=f"5030{now:%Y%m%d}{self.store.next_serial('refund'):010d}",
            amount=amount,
            total=total,
            reason=reason,
            notify_url=notify_url or trade.notify_url,
            status="PROCESSING",
            create_time=now,
            success_time=None,
            due_at=None if delay is None or delay.seconds is None else time.time() + delay.seconds,
            held=delay is not None and delay.seconds is None,
        )
        self.store.insert_refund(row)
        if delay is None:
            self._complete_refund(row)
        else:
            self._wake.set()
        fresh = self.store.refund(out_refund_no)
        assert fresh is not None
        return self._refund_json(fresh)

    # ------------------------------------------------------------------ HTTP

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/pay/transactions/jsapi", self._h_create),
            web.get("/v3/pay/transactions/out-trade-no/{no}", self._h_query),
            web.post("/v3/pay/transactions/out-trade-no/{no}/close", self._h_close),
            web.post("/v3/refund/domestic/refunds", self._h_refund),
            web.get("/v3/refund/domestic/refunds/{no}", self._h_query_refund),
            web.get("/v3/bill/tradebill", self._h_bill),
            web.get("/_sim/info", self._c_info),
            web.post("/_sim/pay", self._c_pay),
            web.get("/_sim/faults", self._c_faults),
            web.post("/_sim/faults", self._c_add_fault),
            web.delete("/_sim/faults", self._c_clear_faults),
            web.get("/_sim/notifications", self._c_notifications),
            web.post("/_sim/notifications/release", self._c_release),
            web.post("/_sim/refunds/complete", self._c_complete),
            web.get("/_sim/ledger", self._c_ledger),
        ]

    async def _authenticated(self, request: web.Request) -> str:
        """The request's body, after its merchant signature checked out.

        Raises:
            _Refused: 401 SIGN_ERROR naming what is wrong.
        """
        body = (await request.read()).decode("utf-8", errors="replace")
        header = request.headers.get("Authorization", "")
        scheme, _, params = header.partition(" ")
        fields = dict(_AUTH.findall(params))
        if scheme != AUTH_SCHEME or not {"mchid", "nonce_str", "timestamp", "signature"} <= set(
            fields
        ):
            raise _Refused(401, "SIGN_ERROR", f"Authorization: expected {AUTH_SCHEME} ...")
        if fields["mchid"] != self.merchant_id:
            raise _Refused(401, "SIGN_ERROR", "mchid: unknown merchant")
        try:
            ts = int(fields["timestamp"])
        except ValueError:
            raise _Refused(401, "SIGN_ERROR", "timestamp: not an integer") from None
        if abs(time.time() - ts) > _WINDOW:
            raise _Refused(401, "SIGN_ERROR", "timestamp: outside the 5-minute window")
        message = (
            f"{request.method}\n{request.path_qs}\n{fields['timestamp']}\n"
            f"{fields['nonce_str']}\n{body}\n"
        ).encode()
        expected = base64.b64encode(
            hmac.new(self.merchant_key, message, hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, fields["signature"]):
            raise _Refused(401, "SIGN_ERROR", "signature: does not verify")
        nonce = fields["nonce_str"]
        now = time.time()
        while self._nonces and next(iter(self._nonces.values())) < now - _WINDOW:
            self._nonces.popitem(last=False)
        if nonce in self._nonces:
            raise _Refused(401, "SIGN_ERROR", "nonce_str: replayed")
        self._nonces[nonce] = now
        if len(self._nonces) > 100_000:
            self._nonces.popitem(last=False)
        return body

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._authenticated(request)
        try:
            obj = json.loads(body)
        except ValueError:
            raise _Refused(400, "PARAM_ERROR", "body: not JSON") from None
        if not isinstance(obj, dict):
            raise _Refused(400, "PARAM_ERROR", "body: must be a JSON object")
        return obj

    async def _committed(
        self, request: web.Request, operation: str, answer: web.Response
    ) -> web.StreamResponse:
        """Sends the answer of a committed change, unless a timeout-after-commit eats it."""
        await self._notify_changed()
        fault = self._take(TimeoutAfterCommit, operation=operation)
        if fault is None:
            return answer
        _log.info("pay_sim: %s committed, answer withheld (%s)", operation, fault.mode)
        if fault.mode == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.hang_seconds)
        if request.transport is not None:
            request.transport.abort()
        return answer

    async def _h_create(self, request: web.Request) -> web.StreamResponse:
        try:
            answer = self._create(await self._json_body(request))
        except _Refused as err:
            return err.response
        return await self._committed(request, "prepay", web.json_response(answer))

    async def _h_query(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticated(request)
        except _Refused as err:
            return err.response
        trade = self.store.trade(request.match_info["no"])
        if trade is None or not trade.prepay_id:
            return _error(404, "ORDER_NOT_EXIST", "order does not exist")
        return web.json_response(self._trade_json(trade))

    async def _h_close(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._json_body(request)
            self._close(request.match_info["no"])
        except _Refused as err:
            return err.response
        return await self._committed(request, "close", web.Response(status=204))

    async def _h_refund(self, request: web.Request) -> web.StreamResponse:
        try:
            answer = self._refund(await self._json_body(request))
        except _Refused as err:
            return err.response
        return await self._committed(request, "refund", web.json_response(answer))

    async def _h_query_refund(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticated(request)
        except _Refused as err:
            return err.response
        refund = self.store.refund(request.match_info["no"])
        if refund is None:
            return _error(404, "RESOURCE_NOT_EXISTS", "refund does not exist")
        return web.json_response(self._refund_json(refund))

    async def _h_bill(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticated(request)
        except _Refused as err:
            return err.response
        try:
            day = dt.date.fromisoformat(request.query.get("bill_date", ""))
        except ValueError:
            return _error(400, "PARAM_ERROR", "bill_date: expected YYYY-MM-DD")
        return web.Response(text=self.statement(day), content_type="text/csv", charset="utf-8")

    async def _c_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "merchant_id": self.merchant_id,
                "app_id": self.app_id,
                "platform_serial": self.platform_serial,
                "platform_public_key": self.platform_public_key_pem.decode(),
            }
        )

    async def _c_pay(self, request: web.Request) -> web.Response:
        body = await _control_json(request)
        try:
            state = await self.pay(str(body.get("out_trade_no", "")), fail=bool(body.get("fail")))
        except LookupError as err:
            return _error(404, "ORDER_NOT_EXIST", str(err))
        except ValueError as err:
            return _error(400, "INVALID_REQUEST", str(err))
        return web.json_response({"trade_state": state})

    async def _c_ledger(self, request: web.Request) -> web.Response:
        """Every payment and refund the channel holds (the chaos run's money check)."""
        return web.json_response(
            {
                "trades": [
                    {"out_trade_no": t.out_trade_no, "amount": t.amount, "state": t.state}
                    for t in self.store.trades()
                ],
                "refunds": [
                    {
                        "out_refund_no": r.out_refund_no,
                        "out_trade_no": r.out_trade_no,
                        "amount": r.amount,
                        "status": r.status,
                    }
                    for r in self.store.refunds()
                ],
            }
        )

    async def _c_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [fault_to_json(f) for f in self.faults()]})

    async def _c_add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = fault_from_json(await _control_json(request))
        except ValueError as err:
            return _error(400, "PARAM_ERROR", str(err))
        await self.inject(fault)
        return await self._c_faults(request)

    async def _c_clear_faults(self, request: web.Request) -> web.Response:
        await self.clear_faults()
        return web.json_response({"faults": []})

    async def _c_notifications(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "notifications": [
                    {
                        "id": n.id,
                        "event": n.event,
                        "ref": n.ref,
                        "state": n.state,
                        "attempts": n.attempts,
                    }
                    for n in self.store.notifications()
                ]
            }
        )

    async def _c_release(self, request: web.Request) -> web.Response:
        return web.json_response({"released": await self.release_notifications()})

    async def _c_complete(self, request: web.Request) -> web.Response:
        return web.json_response({"completed": await self.complete_refunds()})


async def _control_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def _field(obj: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Refused(400, "PARAM_ERROR", f"{name}: required, {kind.__name__}")
    return value
