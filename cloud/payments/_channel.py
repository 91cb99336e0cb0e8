"""`WechatPayChannel`: the `PaymentChannel` over a WeChat-Pay-v3-like merchant API.

Every call is signed with the merchant key (``Authorization: HPLUS-HMAC-SHA256 ...``, see
``tools.pay_sim``), bounded by a deadline, and idempotent by its out-trade or out-refund
number, so an unreachable channel is retried through `mesh.retry`. A lost answer is never a
refusal: no connection is ``Unavailable``; a connection dropped or timed out after the
request went out is ``Unavailable`` / ``DeadlineExceeded`` with reason
``CHANNEL_ANSWER_LOST`` (the caller queries; the outcome is unknown). Refusals are
``InvalidArgument`` (``PARAM_ERROR``) or ``FailedPrecondition`` with the channel's code as
the reason (``ORDERPAID``, ``ORDER_CLOSED``, ``NOT_ENOUGH``, ``INVALID_REQUEST``).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import functools
import hashlib
import hmac
import io
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from cloud.payments._keys import MerchantKeys
from cloud.payments._model import (
    PaymentEvidence,
    PaymentListener,
    Prepay,
    RefundEvidence,
    RefundState,
    StatementRow,
    TradeState,
)
from mesh import errors
from mesh.retry import RetryPolicy, is_transient

__all__ = ["AUTH_SCHEME", "CST", "WechatPayChannel", "parse_time"]

log = logging.getLogger(__name__)

AUTH_SCHEME = "HPLUS-HMAC-SHA256"
CST = dt.timezone(dt.timedelta(hours=8), "UTC+8")
"""The channel's time zone (business dates of statements)."""

_MAX_ANSWER = 1024 * 1024
_MAX_STATEMENT = 64 * 1024 * 1024
_PREPAY_TTL = dt.timedelta(hours=2)
_DOMAIN = "payments.hplus"


def parse_time(text: object) -> dt.datetime | None:
    """An RFC 3339 time of the channel, or None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=CST)


def _fen(text: str) -> int:
    """``"49.00"`` → 4900."""
    yuan, _, cents = text.strip().lstrip("`").partition(".")
    return int(yuan or "0") * 100 + int((cents + "00")[:2])


class WechatPayChannel:
    """A payment channel client (implements `cloud.payments.PaymentChannel`).

    Args:
        base_url: the merchant API's base URL.
        merchant_id: ``mchid``.
        app_id: ``appid``.
        keys: the merchant key and the platform's public key.
        notify_url: the URL the channel notifies (our notification endpoint).
        timeout: deadline of one call, seconds.
        connect_timeout: deadline of connecting, seconds.
        retry: how unreachable-channel errors are retried.
    """

    def __init__(
        self,
        *,
        base_url: str,
        merchant_id: str,
        app_id: str,
        keys: MerchantKeys,
        notify_url: str,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self.merchant_id = merchant_id
        self.app_id = app_id
        self.keys = keys
        self.notify_url = notify_url
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._retry = retry or RetryPolicy(initial=0.1, maximum=2.0, deadline=10.0)
        self._session: aiohttp.ClientSession | None = None
        self._listeners: list[PaymentListener] = []

    async def close(self) -> None:
        """Closes the HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ PaymentChannel

    async def prepay(
        self, out_trade_no: str, amount_fen: int, description: str, payer: str
    ) -> Prepay:
        """Create (or, called again, return) the JSAPI prepay order."""
        answer = await self._call(
            "POST",
            "/v3/pay/transactions/jsapi",
            {
                "appid": self.app_id,
                "mchid": self.merchant_id,
                "description": description,
                "out_trade_no": out_trade_no,
                "notify_url": self.notify_url,
                "amount": {"total": amount_fen, "currency": "CNY"},
                "payer": {"openid": payer},
            },
        )
        prepay_id = str(answer.get("prepay_id", "")) if isinstance(answer, dict) else ""
        if not prepay_id:
            raise errors.Unavailable("payment channel answered without prepay_id")
        stamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        package = f"prepay_id={prepay_id}"
        message = f"{self.app_id}\n{stamp}\n{nonce}\n{package}\n".encode()
        pay_sign = base64.b64encode(
            hmac.new(self.keys.merchant_key, message, hashlib.sha256).digest()
        ).decode()
        return Prepay(
            out_trade_no=out_trade_no,
            prepay_id=prepay_id,
            app_parameters={
                "appId": self.app_id,
                "timeStamp": stamp,
                "nonceStr": nonce,
                "package": package,
                "signType": AUTH_SCHEME,
                "paySign": pay_sign,
            },
            expires_at=dt.datetime.now(dt.UTC) + _PREPAY_TTL,
        )

    async def query_payment(self, out_trade_no: str) -> PaymentEvidence:
        """The channel's evidence of a payment (state ``NOT_FOUND`` when it has none)."""
        answer = await self._call(
            "GET",
            f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.merchant_id}",
            None,
            not_found_ok=True,
        )
        if answer is None:
            return PaymentEvidence(out_trade_no, TradeState.NOT_FOUND, 0, source="query")
        return payment_evidence(answer, source="query")

    async def close_payment(self, out_trade_no: str) -> None:
        """Close an unpaid payment (idempotent; a paid one: ``FailedPrecondition`` ORDERPAID)."""
        await self._call(
            "POST",
            f"/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            {"mchid": self.merchant_id},
        )

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundEvidence:
        """Request (or, called again, return) a refund."""
        answer = await self._call(
            "POST",
            "/v3/refund/domestic/refunds",
            {
                "out_trade_no": out_trade_no,
                "out_refund_no": out_refund_no,
                "reason": reason,
                "notify_url": self.notify_url,
                "amount": {"refund": amount_fen, "total": total_fen, "currency": "CNY"},
            },
        )
        return refund_evidence(answer, source="query")

    async def query_refund(self, out_refund_no: str) -> RefundEvidence:
        """The channel's evidence of a refund (state ``NOT_FOUND`` when it has none)."""
        answer = await self._call(
            "GET", f"/v3/refund/domestic/refunds/{out_refund_no}", None, not_found_ok=True
        )
        if answer is None:
            return RefundEvidence(out_refund_no, "", RefundState.NOT_FOUND, 0, source="query")
        return refund_evidence(answer, source="query")

    async def statement(self, business_date: dt.date) -> Sequence[StatementRow]:
        """The trade bill of one business date (UTC+8), payments and refunds."""
        text = await self._call(
            "GET", f"/v3/bill/tradebill?bill_date={business_date.isoformat()}", None, raw=True
        )
        assert isinstance(text, str)
        return parse_statement(text, business_date)

    def add_listener(self, listener: PaymentListener) -> None:
        """Receive the evidence of every verified notification."""
        self._listeners.append(listener)

    async def dispatch(self, evidence: PaymentEvidence | RefundEvidence) -> None:
        """Hands a verified notification's evidence to every listener (in order).

        Raises:
            Exception: what a listener raised (the endpoint then answers 500: the channel
                delivers the notification again).
        """
        for listener in list(self._listeners):
            await listener(evidence)

    # ------------------------------------------------------------------ HTTP

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _authorization(self, method: str, path: str, body: str) -> str:
        stamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        message = f"{method}\n{path}\n{stamp}\n{nonce}\n{body}\n".encode()
        signature = base64.b64encode(
            hmac.new(self.keys.merchant_key, message, hashlib.sha256).digest()
        ).decode()
        return (
            f'{AUTH_SCHEME} mchid="{self.merchant_id}",nonce_str="{nonce}",'
            f'timestamp="{stamp}",signature="{signature}"'
        )

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        not_found_ok: bool = False,
        raw: bool = False,
    ) -> Any:
        retrying = self._retry.retrying(retry_on=functools.partial(is_transient, idempotent=True))
        return await retrying(self._once, method, path, body, not_found_ok, raw)

    async def _once(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        not_found_ok: bool,
        raw: bool,
    ) -> Any:
        payload = json.dumps(body, ensure_ascii=False) if body is not None else ""
        headers = {
            "Authorization": self._authorization(method, path, payload),
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        limit = _MAX_STATEMENT if raw else _MAX_ANSWER
        try:
            async with self._session_().request(
                method, self._base + path, data=payload.encode(), headers=headers
            ) as resp:
                if resp.content_length is not None and resp.content_length > limit:
                    raise errors.Unavailable(
                        f"payment channel answer of {resp.content_length} bytes is over "
                        f"the {limit}-byte bound",
                        reason="CHANNEL_ANSWER_TOO_LARGE",
                        domain=_DOMAIN,
                    )
                # The whole body, bounded: a single read() returns what has arrived so far
                # (a large statement came back cut at a chunk, its latest rows missing).
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise errors.Unavailable(
                            f"payment channel answer is over the {limit}-byte bound",
                            reason="CHANNEL_ANSWER_TOO_LARGE",
                            domain=_DOMAIN,
                        )
                    chunks.append(chunk)
                data = b"".join(chunks)
                status = resp.status
        except aiohttp.ClientConnectorError as err:
            raise errors.Unavailable(
                f"payment channel not reachable: {err.os_error.strerror or err}",
                reason="CHANNEL_UNREACHABLE",
                domain=_DOMAIN,
            ) from None
        except aiohttp.ConnectionTimeoutError:
            raise errors.Unavailable(
                "payment channel not reachable: connect timed out",
                reason="CHANNEL_UNREACHABLE",
                domain=_DOMAIN,
            ) from None
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"payment channel did not answer {method} {path.split('?')[0]} in time: "
                "outcome unknown, query it",
                reason="CHANNEL_ANSWER_LOST",
                domain=_DOMAIN,
            ) from None
        except aiohttp.ClientError as err:
            raise errors.Unavailable(
                f"payment channel answer to {method} {path.split('?')[0]} lost "
                f"({type(err).__name__}): outcome unknown, query it",
                reason="CHANNEL_ANSWER_LOST",
                domain=_DOMAIN,
            ) from None
        if 200 <= status < 300:
            if raw:
                return data.decode("utf-8", errors="replace")
            if not data:
                return {}
            try:
                return json.loads(data)
            except ValueError:
                raise errors.Unavailable(
                    "payment channel answered with malformed JSON",
                    reason="CHANNEL_BAD_ANSWER",
                    domain=_DOMAIN,
                ) from None
        code, message = _refusal(data)
        if status == 404 and not_found_ok:
            return None
        raise _error(status, code, message)


def _refusal(data: bytes) -> tuple[str, str]:
    try:
        obj = json.loads(data)
    except ValueError:
        return "", data[:200].decode("utf-8", errors="replace")
    if not isinstance(obj, dict):
        return "", ""
    return str(obj.get("code", ""))[:64], str(obj.get("message", ""))[:200]


def _error(status: int, code: str, message: str) -> errors.StatusError:
    text = f"payment channel refused ({status} {code}): {message}"
    if status == 400 and code == "PARAM_ERROR":
        field, _, why = message.partition(":")
        return errors.InvalidArgument(
            text, reason=code, domain=_DOMAIN, field_violations=[(field.strip(), why.strip())]
        )
    if status in (400, 403, 409):
        return errors.FailedPrecondition(text, reason=code or "REFUSED", domain=_DOMAIN)
    if status == 404:
        return errors.NotFound(text, reason=code or "NOT_FOUND", domain=_DOMAIN)
    if status == 401:
        return errors.Unauthenticated(text, reason=code or "SIGN_ERROR", domain=_DOMAIN)
    if status == 429:
        return errors.ResourceExhausted(text, reason=code or "FREQUENCY_LIMITED", domain=_DOMAIN)
    # 5xx (SYSTEM_ERROR) and anything else: the channel may or may not have done it.
    return errors.Unavailable(text, reason=code or "CHANNEL_ERROR", domain=_DOMAIN)


def payment_evidence(obj: Any, *, source: str) -> PaymentEvidence:
    """Evidence from a transaction object (a query answer or a decrypted notification).

    Raises:
        ValueError: the object is not a transaction.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("out_trade_no"), str):
        raise ValueError("not a transaction: out_trade_no missing")
    try:
        state = TradeState(str(obj.get("trade_state", "")))
    except ValueError:
        raise ValueError(f"trade_state {obj.get('trade_state')!r} unknown") from None
    amount = obj.get("amount", {})
    total = amount.get("total", 0) if isinstance(amount, dict) else 0
    return PaymentEvidence(
        out_trade_no=obj["out_trade_no"],
        state=state,
        amount_fen=int(total) if isinstance(total, int) else 0,
        transaction_id=str(obj.get("transaction_id", "")),
        paid_at=parse_time(obj.get("success_time")),
        source=source,
    )


def refund_evidence(obj: Any, *, source: str) -> RefundEvidence:
    """Evidence from a refund object (a refund answer, query or decrypted notification).

    Raises:
        ValueError: the object is not a refund.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("out_refund_no"), str):
        raise ValueError("not a refund: out_refund_no missing")
    status = obj.get("status") or obj.get("refund_status") or ""
    try:
        state = RefundState(str(status))
    except ValueError:
        raise ValueError(f"refund status {status!r} unknown") from None
    amount = obj.get("amount", {})
    refund = amount.get("refund", 0) if isinstance(amount, dict) else 0
    return RefundEvidence(
        out_refund_no=obj["out_refund_no"],
        out_trade_no=str(obj.get("out_trade_no", "")),
        state=state,
        amount_fen=int(refund) if isinstance(refund, int) else 0,
        refund_id=str(obj.get("refund_id", "")),
        succeeded_at=parse_time(obj.get("success_time")),
        source=source,
    )


def parse_statement(text: str, business_date: dt.date) -> list[StatementRow]:
    """The rows of a trade bill (CSV, values prefixed with a backtick, a summary at the end).

    Raises:
        errors.DataLoss: the bill is malformed (naming the line).
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise errors.DataLoss("payment channel statement is empty", domain=_DOMAIN)
    index = {name.strip(): i for i, name in enumerate(header)}
    needed = (
        "交易时间",
        "微信订单号",
        "商户订单号",
        "交易状态",
        "应结订单金额",
        "商户退款单号",
        "退款金额",
    )
    missing = [n for n in needed if n not in index]
    if missing:
        raise errors.DataLoss(
            f"payment channel statement line 1: columns missing: {', '.join(missing)}",
            domain=_DOMAIN,
        )
    rows: list[StatementRow] = []
    summary: list[str] | None = None
    for line, record in enumerate(reader, start=2):
        if record and record[0].strip() == "总交易单数":
            summary = [v.strip().lstrip("`") for v in next(reader, [])]
            break
        if not record:
            continue
        values = [v.strip().lstrip("`") for v in record]
        try:
            when = dt.datetime.strptime(values[index["交易时间"]], "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=CST
            )
            state = values[index["交易状态"]]
            if state == "REFUND":
                kind, amount = "refund", _fen(values[index["退款金额"]])
                refund_no = values[index["商户退款单号"]]
            else:
                kind, amount, refund_no = "payment", _fen(values[index["应结订单金额"]]), ""
        except (IndexError, ValueError) as err:
            raise errors.DataLoss(
                f"payment channel statement line {line}: {err}", domain=_DOMAIN
            ) from None
        rows.append(
            StatementRow(
                business_date=business_date,
                kind=kind,
                out_trade_no=values[index["商户订单号"]],
                transaction_id=values[index["微信订单号"]],
                amount_fen=amount,
                out_refund_no=refund_no,
                occurred_at=when,
            )
        )
    _check_summary(summary, rows)
    return rows


def _check_summary(summary: list[str] | None, rows: list[StatementRow]) -> None:
    """The bill's closing summary (count, payments total, refunds total) against its rows.

    A bill cut short (a lost connection, a partial read) loses its latest rows and its
    summary; a bill whose rows do not add up is refused, never reconciled as it is.

    Raises:
        errors.DataLoss: no summary, or one the rows disagree with.
    """
    if not summary:
        raise errors.DataLoss(
            f"payment channel statement has no summary after {len(rows)} rows: cut short?",
            domain=_DOMAIN,
        )
    try:
        count, paid, refunded = int(summary[0]), _fen(summary[1]), _fen(summary[2])
    except (IndexError, ValueError) as err:
        raise errors.DataLoss(
            f"payment channel statement summary is malformed: {err}", domain=_DOMAIN
        ) from None
    got = (
        len(rows),
        sum(r.amount_fen for r in rows if r.kind == "payment"),
        sum(r.amount_fen for r in rows if r.kind == "refund"),
    )
    if got != (count, paid, refunded):
        raise errors.DataLoss(
            f"payment channel statement rows ({got[0]}, payments {got[1]} fen, refunds "
            f"{got[2]} fen) disagree with its summary ({count}, {paid} fen, {refunded} fen)",
            domain=_DOMAIN,
        )
