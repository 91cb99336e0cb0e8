"""TLS material: a development CA and server certificates made on first run.

Production nodes use the operator's certificates; the embedded default (``make run``) makes a
private CA under the data directory once and issues the node a certificate for the local
names, so TLS is on from the first run and no secret ever goes into the repository.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsError", "TlsFiles", "ensure_dev_pki", "load_server_credentials"]

_CA_DAYS = 3650
_LEAF_DAYS = 825


class TlsError(Exception):
    """TLS material is missing, unreadable or malformed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files a node serves TLS with."""

    ca_cert: Path
    """The CA that issued the server certificate; clients trust it."""
    server_cert: Path
    """The server's certificate chain."""
    server_key: Path
    """The server's private key (mode 0600)."""


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_dev_pki(directory: Path, *, hostnames: tuple[str, ...] = ()) -> TlsFiles:
    """Make a development CA and a server certificate under ``directory`` unless present.

    Args:
        directory: where the PEM files live (created if missing).
        hostnames: extra DNS names for the server certificate, beyond ``localhost``,
            ``127.0.0.1``, ``::1`` and this machine's host name.

    Returns:
        The paths of the CA certificate, server certificate and server key.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    ca_key_path = directory / "ca-key.pem"
    now = dt.datetime.now(dt.UTC)
    if not (files.ca_cert.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hplus development CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, _key_pem(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        # A new CA invalidates any leaf issued by an older one.
        files.server_cert.unlink(missing_ok=True)
    if files.server_cert.exists() and files.server_key.exists():
        return files
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{ca_key_path}: not an EC private key")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.DNSName(h) for h in {socket.gethostname(), *hostnames} if h]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hplus cloud node")]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key_loaded, hashes.SHA256())
    )
    _write_private(files.server_key, _key_pem(leaf_key))
    files.server_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return files


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TlsError(f"{path}: cannot read {what}: {err.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsError(f"{path}: {what} is not PEM")
    return data


def load_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Build gRPC server credentials from PEM files.

    Raises:
        TlsError: a file is missing, unreadable or not PEM.
    """
    key = _read(files.server_key, "server key")
    cert = _read(files.server_cert, "server certificate")
    return grpc.ssl_server_credentials([(key, cert)])
