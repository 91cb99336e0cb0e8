"""Keys of edge packages: an offline root key certifies the signing keys.

The idea is TUF's root-of-trust, kept small. An edge trusts one or more *root* public keys
(shipped with the edge, changed only by an upgrade signed under the old root). A root key,
kept offline, certifies a *signing* key for a validity window; packages are signed by a
signing key and carry its certificate. Rotating a signing key is issuing a new certificate:
no edge needs a new trust file. Compromise of a signing key is bounded by its certificate's
expiry (keep it short) — revocation lists, thresholds of keys, delegations and TUF's
timestamp/snapshot roles are left out (see docs/architecture.md "Fleet packages").

Keys are Ed25519 (`cryptography`). Private keys are PEM PKCS#8 files mode 0600; public keys
PEM SubjectPublicKeyInfo. A key's id is the first 16 hex digits of the SHA-256 of its raw
public bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mesh.files import create_private_file
from mesh.packages._errors import PackageError

__all__ = [
    "CERTIFICATE_TYPE",
    "SigningCertificate",
    "TrustRoot",
    "canonical_json",
    "certify_signing_key",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_pem",
    "write_private_key",
]

CERTIFICATE_TYPE = "hplus.signing-key/v1"
_MAX_KEY_FILE = 16 * 1024
_MAX_CERT_BYTES = 16 * 1024


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The one byte form of a JSON object that is signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a private key as PEM PKCS#8, created mode 0600; refuses to overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if path.exists():
        raise PackageError("KEY_EXISTS", f"{path}: exists; a key file is never overwritten")
    create_private_file(path, pem)


def public_pem(public: Ed25519PublicKey) -> bytes:
    """A public key as PEM SubjectPublicKeyInfo."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read_small(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise PackageError("BAD_KEY", f"{path}: cannot read {what}: {err.strerror}") from None
    if len(data) > limit:
        raise PackageError("BAD_KEY", f"{path}: {what} larger than {limit} bytes")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM PKCS#8)."""
    data = _read_small(path, _MAX_KEY_FILE, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise PackageError("BAD_KEY", f"{path}: not a PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError("BAD_KEY", f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM SubjectPublicKeyInfo)."""
    data = _read_small(path, _MAX_KEY_FILE, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise PackageError("BAD_KEY", f"{path}: not a PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError("BAD_KEY", f"{path}: not an Ed25519 public key")
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise PackageError("BAD_CERTIFICATE", f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise PackageError("BAD_CERTIFICATE", f"{what} is not valid base64") from None


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise PackageError("BAD_CERTIFICATE", f"{what} is not a time string")
    try:
        parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise PackageError(
            "BAD_CERTIFICATE", f"{what}: {value!r} is not YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    return parsed.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class SigningCertificate:
    """A signing key certified by a root key for a validity window."""

    key_id: str
    public_key: Ed25519PublicKey
    not_before: dt.datetime
    not_after: dt.datetime
    root_key_id: str
    signature: bytes

    def body(self) -> dict[str, Any]:
        """The signed fields."""
        return {
            "type": CERTIFICATE_TYPE,
            "key_id": self.key_id,
            "public_key": _b64(_raw(self.public_key)),
            "not_before": _time(self.not_before),
            "not_after": _time(self.not_after),
            "root_key_id": self.root_key_id,
        }

    def to_json(self) -> dict[str, Any]:
        """The certificate as a JSON object (its body plus the root's signature)."""
        return {**self.body(), "signature": _b64(self.signature)}

    def to_bytes(self) -> bytes:
        """The certificate file's bytes."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, value: object) -> SigningCertificate:
        """Parse a certificate (its fields only; `TrustRoot.check` verifies it)."""
        if not isinstance(value, dict):
            raise PackageError("BAD_CERTIFICATE", "the certificate is not a JSON object")
        if value.get("type") != CERTIFICATE_TYPE:
            raise PackageError(
                "BAD_CERTIFICATE",
                f"certificate type is {value.get('type')!r}, not {CERTIFICATE_TYPE}",
            )
        raw = _unb64(value.get("public_key"), "public_key")
        try:
            public = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise PackageError("BAD_CERTIFICATE", "public_key is not an Ed25519 key") from None
        cert = cls(
            key_id=str(value.get("key_id", "")),
            public_key=public,
            not_before=_parse_time(value.get("not_before"), "not_before"),
            not_after=_parse_time(value.get("not_after"), "not_after"),
            root_key_id=str(value.get("root_key_id", "")),
            signature=_unb64(value.get("signature"), "signature"),
        )
        if cert.key_id != key_id(public):
            raise PackageError("BAD_CERTIFICATE", "key_id does not match the public key")
        return cert

    @classmethod
    def load(cls, path: Path) -> SigningCertificate:
        """Read a certificate file."""
        data = _read_small(path, _MAX_CERT_BYTES, "certificate")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise PackageError("BAD_CERTIFICATE", f"{path}: not JSON ({err})") from None
        return cls.from_json(value)


def certify_signing_key(
    root: Ed25519PrivateKey,
    signing: Ed25519PublicKey,
    *,
    valid_for: dt.timedelta,
    now: dt.datetime | None = None,
) -> SigningCertificate:
    """Certify a signing key with the root key, valid from now for ``valid_for``."""
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    unsigned = SigningCertificate(
        key_id=key_id(signing),
        public_key=signing,
        not_before=start,
        not_after=start + valid_for,
        root_key_id=key_id(root.public_key()),
        signature=b"",
    )
    return dataclasses.replace(unsigned, signature=root.sign(canonical_json(unsigned.body())))


class TrustRoot:
    """The root public keys an edge trusts, and the check of a signing certificate."""

    def __init__(self, roots: Iterable[Ed25519PublicKey]) -> None:
        self._roots = {key_id(k): k for k in roots}
        if not self._roots:
            raise PackageError("BAD_KEY", "no root key to trust")

    @classmethod
    def load(cls, paths: Iterable[Path]) -> TrustRoot:
        """Trust the root public keys in these PEM files."""
        return cls(load_public_key(p) for p in paths)

    @property
    def key_ids(self) -> list[str]:
        """Ids of the trusted root keys."""
        return sorted(self._roots)

    def check(self, cert: SigningCertificate, *, now: dt.datetime | None = None) -> None:
        """Raise `PackageError` unless a trusted root certified ``cert`` and it is valid now."""
        root = self._roots.get(cert.root_key_id)
        if root is None:
            raise PackageError(
                "UNKNOWN_KEY",
                f"the signing key {cert.key_id} is certified by root {cert.root_key_id}, "
                f"which this edge does not trust (trusted: {', '.join(self.key_ids)})",
            )
        try:
            root.verify(cert.signature, canonical_json(cert.body()))
        except InvalidSignature:
            raise PackageError(
                "BAD_CERTIFICATE",
                f"the certificate of signing key {cert.key_id} is not signed by root "
                f"{cert.root_key_id}",
            ) from None
        moment = now or dt.datetime.now(dt.UTC)
        if not cert.not_before <= moment <= cert.not_after:
            raise PackageError(
                "CERTIFICATE_EXPIRED",
                f"the certificate of signing key {cert.key_id} is valid "
                f"{_time(cert.not_before)} to {_time(cert.not_after)}, not at {_time(moment)}",
            )
