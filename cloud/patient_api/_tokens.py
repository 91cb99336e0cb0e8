"""AIP-158 page tokens: opaque, signed, bound to the query they continue, expiring.

A token carries the read store's cursor (where the next page starts), when it was issued
and a digest of the request it was issued for (every field but ``page_token`` and
``page_size``, which AIP-158 lets a client change between pages). It is signed with an
HMAC key derived from the cluster secret, so any node of the cluster accepts what another
issued, and nobody can forge or edit one: a token that fails its signature is "not a
token this server issued", one presented with other filters "belongs to another query",
one older than its lifetime "has expired". Each is ``INVALID_ARGUMENT`` with a
``BadRequest`` violation on ``page_token`` (`TokenError`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from collections.abc import Callable

from google.protobuf.message import Message

__all__ = ["PAGE_TOKEN_LIFETIME", "PageTokens", "TokenError"]

PAGE_TOKEN_LIFETIME = 24 * 3600.0
"""Seconds a page token stays valid (the contract's paging convention: 24 hours)."""

_VERSION = 1
_HEADER = struct.Struct(">BQ16s")  # version, issued (unix seconds), query digest
_MAC_BYTES = 16
_MAX_TOKEN = 2048
"""Longest token accepted; ours are far shorter (a cursor is a few ids)."""
_CLOCK_SKEW = 300.0
"""A token may claim to be this many seconds from the future (nodes' clocks differ)."""


class TokenError(ValueError):
    """A page token is refused (INVALID_ARGUMENT on ``page_token``).

    Args:
        message: what is wrong with it, for the field violation.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def query_digest(method: str, request: Message) -> bytes:
    """What binds a token to its query: the method and the request without paging fields."""
    bare = type(request)()
    bare.CopyFrom(request)
    for name in ("page_token", "page_size"):
        if name in bare.DESCRIPTOR.fields_by_name:
            bare.ClearField(name)
    digest = hashlib.sha256(method.encode())
    digest.update(b"\0")
    digest.update(bare.SerializeToString(deterministic=True))
    return digest.digest()[:16]


class PageTokens:
    """Issues and opens page tokens.

    Args:
        secret: the cluster secret (the signing key is derived from it, per purpose).
        lifetime: seconds a token stays valid.
        clock: seconds since the epoch (tests inject one).
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        lifetime: float = PAGE_TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if not raw:
            raise ValueError("page tokens need a non-empty secret")
        self._key = hmac.new(raw, b"hplus.cloud.v1 page tokens", hashlib.sha256).digest()
        self._lifetime = lifetime
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, method: str, request: Message, cursor: str) -> str:
        """The ``next_page_token`` continuing ``request`` at ``cursor`` ("" for none)."""
        if not cursor:
            return ""
        payload = _HEADER.pack(
            _VERSION, int(self._clock()), query_digest(method, request)
        ) + cursor.encode("utf-8")
        return _b64(payload + self._mac(payload))

    def open(self, method: str, request: Message) -> str:
        """The cursor of ``request.page_token`` ("" for the first page).

        Raises:
            TokenError: not ours (malformed, edited), from another query, or expired.
        """
        token: str = getattr(request, "page_token", "")
        if not token:
            return ""
        if len(token) > _MAX_TOKEN:
            raise TokenError("is not a token this server issued")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("is not a token this server issued") from None
        if len(raw) < _HEADER.size + _MAC_BYTES:
            raise TokenError("is not a token this server issued")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError("is not a token this server issued")
        version, issued, digest = _HEADER.unpack_from(payload)
        if version != _VERSION:
            raise TokenError("is not a token this server issued")
        if not hmac.compare_digest(digest, query_digest(method, request)):
            raise TokenError(
                "belongs to another query: keep every filter of the first page, or start "
                "again without a page_token"
            )
        now = self._clock()
        if issued > now + _CLOCK_SKEW:
            raise TokenError("is not a token this server issued")
        if now - issued > self._lifetime:
            raise TokenError(
                f"has expired (page tokens last {self._lifetime / 3600:g} h): start again "
                "from the first page"
            )
        try:
            return payload[_HEADER.size :].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError("is not a token this server issued") from None
