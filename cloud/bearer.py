"""Bearer tokens ``<prefix>.<id>.<secret>`` whose secret is stored only as a digest.

Hospital credentials (``hpc1``), registry tokens (``hpr1``), patient apps' keys (``hpk1``)
and account sessions (``hpa1``, whose id starts with the account's region) share this
format: the id finds the row, the SHA-256 of the 256-bit random secret is what the row
keeps, so a leaked database leaks no usable token. A fast hash is right here: the secret
is random, not a password, so there is nothing to brute-force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

__all__ = ["MintedToken", "mint", "parse", "secret_matches"]


@dataclasses.dataclass(frozen=True)
class MintedToken:
    """A new token: what to store (id, digest) and what to hand out once (token)."""

    token_id: str
    """The public id (safe to log and list)."""
    secret_sha256: str
    """Hex SHA-256 of the secret: the only trace of it that is stored."""
    token: str = dataclasses.field(repr=False)
    """The bearer token; never stored."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(prefix: str, *, token_id: str | None = None) -> MintedToken:
    """A fresh token with a 64-bit id (unless ``token_id`` is given) and a 256-bit secret.

    A caller that routes by the id (a session's region) chooses it; it must not contain
    ``.``.
    """
    if token_id is None:
        token_id = secrets.token_hex(8)
    elif "." in token_id or not token_id:
        raise ValueError("a token id must be non-empty and contain no '.'")
    secret = secrets.token_urlsafe(32)
    return MintedToken(token_id, _digest(secret), f"{prefix}.{token_id}.{secret}")


def parse(token: str | None, prefix: str) -> tuple[str, str] | None:
    """The ``(id, secret)`` of a well-formed token with ``prefix``, else ``None``."""
    if not token:
        return None
    head, _, rest = token.partition(".")
    token_id, _, secret = rest.partition(".")
    if head != prefix or not token_id or not secret:
        return None
    return token_id, secret


def secret_matches(stored_sha256: str, secret: str) -> bool:
    """Whether ``secret`` is the one whose digest was stored (constant time)."""
    return hmac.compare_digest(stored_sha256, _digest(secret))
