"""The keys a merchant holds: its API key (a secret file) and the platform's public key."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["MerchantKeys", "PaymentKeyError", "load_keys", "platform_serial"]

log = logging.getLogger(__name__)


class PaymentKeyError(Exception):
    """A key file is missing, unreadable or malformed; the message names the file."""


def platform_serial(key: Ed25519PublicKey) -> str:
    """The key's serial (``Wechatpay-Serial``): the first 16 hex digits of its DER's SHA-256."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16].upper()


@dataclasses.dataclass(frozen=True)
class MerchantKeys:
    """What signs our requests and verifies and decrypts the channel's notifications."""

    merchant_key: bytes = dataclasses.field(repr=False)
    """The 32-byte API key (HMAC of requests, AEAD_AES_256_GCM of notification resources)."""
    platform_key: Ed25519PublicKey
    """The platform's public key."""

    @property
    def serial(self) -> str:
        """The platform key's serial, which notifications must name."""
        return platform_serial(self.platform_key)


def load_keys(merchant_key_file: Path, platform_public_key_file: Path) -> MerchantKeys:
    """Reads both key files.

    The merchant key file must not be readable by others (it is logged and refused).

    Raises:
        PaymentKeyError: a file is missing, too open, or not a key.
    """
    try:
        mode = merchant_key_file.stat().st_mode
        raw = merchant_key_file.read_bytes().strip()
    except OSError as err:
        raise PaymentKeyError(
            f"{merchant_key_file}: cannot read merchant key: {err.strerror}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PaymentKeyError(
            f"{merchant_key_file}: merchant key is readable by others (mode "
            f"{stat.S_IMODE(mode):04o}): chmod 600"
        )
    if len(raw) != 32:
        raise PaymentKeyError(f"{merchant_key_file}: merchant key must be 32 bytes, got {len(raw)}")
    try:
        pem = platform_public_key_file.read_bytes()
    except OSError as err:
        raise PaymentKeyError(
            f"{platform_public_key_file}: cannot read platform public key: {err.strerror}"
        ) from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise PaymentKeyError(f"{platform_public_key_file}: not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PaymentKeyError(f"{platform_public_key_file}: expected an Ed25519 public key")
    return MerchantKeys(merchant_key=raw, platform_key=key)
