"""Edge packages: build, sign and verify.

A package is an uncompressed POSIX tar, written deterministically (sorted members, mtime 0,
owner 0, mode 0644) so that the same inputs give the same bytes and binary deltas between
versions stay small. Members, in this order:

- ``manifest.json`` — canonical JSON: type ``hplus.edge-package/v1``, ``version`` (semver),
  ``contract_release``, ``profile_schema_version``, ``created_at`` and ``files`` (path,
  size, sha256 of each payload file);
- ``signature.json`` — the signing key's certificate and its Ed25519 signature over the
  exact bytes of ``manifest.json`` (absent in an unsigned package);
- ``files/<path>`` — the payload (the wheels the edge runs), one member per manifest entry.

`verify_package` trusts nothing in the archive before the signature checks out: member
count, names, types and sizes are bounded while reading; then the certificate chain, the
signature, every file's size and digest, no extra or missing member, and (given the
installed version) no downgrade. Each failure is a `PackageError` with a reason code.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

import semver
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.packages._errors import PackageError
from mesh.packages._keys import SigningCertificate, TrustRoot, canonical_json, key_id

__all__ = [
    "MANIFEST_TYPE",
    "MAX_FILES",
    "MAX_PACKAGE_BYTES",
    "Manifest",
    "ManifestFile",
    "VerifiedPackage",
    "build_package",
    "files_from_paths",
    "package_id",
    "payload_of",
    "read_manifest",
    "sign_package",
    "verify_package",
]

MANIFEST_TYPE = "hplus.edge-package/v1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
FILES = "files/"
MAX_FILES = 10_000
"""Most payload files a package may list."""
MAX_PACKAGE_BYTES = 512 * 1024 * 1024
"""Default bound on a package's size (the edge's ``[upgrade] max_package_bytes``)."""
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_SIGNATURE_BYTES = 32 * 1024
_MAX_PATH = 255
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ManifestFile:
    """One payload file of a package."""

    path: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a package is: version, contracts it speaks, and its files."""

    version: str
    contract_release: str
    profile_schema_version: int
    created_at: str
    files: tuple[ManifestFile, ...]

    def to_bytes(self) -> bytes:
        """The manifest's canonical bytes (what the signature covers)."""
        return canonical_json(
            {
                "type": MANIFEST_TYPE,
                "version": self.version,
                "contract_release": self.contract_release,
                "profile_schema_version": self.profile_schema_version,
                "created_at": self.created_at,
                "files": [dataclasses.asdict(f) for f in self.files],
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Parse and validate a manifest; every rule broken names its field."""
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise PackageError("BAD_MANIFEST", f"{MANIFEST} is not JSON ({err})") from None
        if not isinstance(value, dict):
            raise PackageError("BAD_MANIFEST", f"{MANIFEST} is not a JSON object")
        if value.get("type") != MANIFEST_TYPE:
            raise PackageError(
                "BAD_MANIFEST", f"{MANIFEST}: type is {value.get('type')!r}, not {MANIFEST_TYPE}"
            )
        version = _semver(value.get("version"), "version")
        contract = _semver(value.get("contract_release"), "contract_release")
        schema = value.get("profile_schema_version")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise PackageError(
                "BAD_MANIFEST", f"{MANIFEST}: profile_schema_version must be an integer ≥ 1"
            )
        created = value.get("created_at")
        if not isinstance(created, str) or len(created) > 64:
            raise PackageError("BAD_MANIFEST", f"{MANIFEST}: created_at must be a string")
        raw_files = value.get("files")
        if not isinstance(raw_files, list):
            raise PackageError("BAD_MANIFEST", f"{MANIFEST}: files must be a list")
        if len(raw_files) > MAX_FILES:
            raise PackageError(
                "BAD_MANIFEST", f"{MANIFEST}: {len(raw_files)} files, more than {MAX_FILES}"
            )
        files: list[ManifestFile] = []
        seen: set[str] = set()
        for i, entry in enumerate(raw_files):
            where = f"{MANIFEST}: files[{i}]"
            if not isinstance(entry, dict):
                raise PackageError("BAD_MANIFEST", f"{where} is not an object")
            path = _payload_path(entry.get("path"), where)
            size = entry.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise PackageError("BAD_MANIFEST", f"{where}.size must be an integer ≥ 0")
            digest = entry.get("sha256")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise PackageError("BAD_MANIFEST", f"{where}.sha256 must be 64 lowercase hex")
            if path in seen:
                raise PackageError("BAD_MANIFEST", f"{where}.path {path!r} is listed twice")
            seen.add(path)
            files.append(ManifestFile(path, size, digest))
        return cls(version, contract, schema, created, tuple(files))


def _semver(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise PackageError("BAD_MANIFEST", f"{MANIFEST}: {field} must be a version string")
    try:
        semver.Version.parse(value)
    except ValueError:
        raise PackageError(
            "BAD_MANIFEST", f"{MANIFEST}: {field} {value!r} is not a semantic version"
        ) from None
    return value


def _payload_path(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_PATH:
        raise PackageError("BAD_MANIFEST", f"{where}.path must be 1 to {_MAX_PATH} characters")
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts or str(pure) != value or "\\" in value:
        raise PackageError("BAD_MANIFEST", f"{where}.path {value!r} must be a plain relative path")
    return value


@dataclasses.dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature, certificate and files checked out."""

    manifest: Manifest
    signing_key_id: str
    sha256: str
    """Digest of the whole package file."""
    size: int


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write(out: IO[bytes], members: Sequence[tuple[str, bytes]]) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_info(name, len(data)), io.BytesIO(data))


def build_package(
    files: Mapping[str, bytes],
    *,
    version: str,
    contract_release: str,
    profile_schema_version: int,
    created_at: dt.datetime | None = None,
) -> bytes:
    """An unsigned package of these payload files (path → bytes)."""
    entries = tuple(
        ManifestFile(path, len(data), hashlib.sha256(data).hexdigest())
        for path, data in sorted(files.items())
    )
    stamp = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    manifest = Manifest(
        version=version,
        contract_release=contract_release,
        profile_schema_version=profile_schema_version,
        created_at=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=entries,
    )
    # Validate what we are about to write with the same rules an edge applies.
    Manifest.parse(manifest.to_bytes())
    out = io.BytesIO()
    _write(out, [(MANIFEST, manifest.to_bytes()), *((FILES + p, files[p]) for p in sorted(files))])
    return out.getvalue()


@dataclasses.dataclass
class _Read:
    manifest_bytes: bytes
    signature_bytes: bytes | None
    digests: dict[str, tuple[int, str]]
    payload: dict[str, bytes] | None


def _read(source: IO[bytes], *, max_bytes: int, keep_payload: bool) -> _Read:
    manifest: bytes | None = None
    signature: bytes | None = None
    digests: dict[str, tuple[int, str]] = {}
    payload: dict[str, bytes] | None = {} if keep_payload else None
    total = 0
    try:
        tar = tarfile.open(fileobj=source, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PackageError("BAD_ARCHIVE", f"not a package archive ({err})") from None
    with tar:
        count = 0
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError) as err:
                raise PackageError(
                    "TRUNCATED", f"the archive ends early or is damaged ({err})"
                ) from None
            if member is None:
                break
            count += 1
            if count > MAX_FILES + 2:
                raise PackageError("BAD_ARCHIVE", f"more than {MAX_FILES + 2} members")
            if not member.isreg():
                raise PackageError("BAD_ARCHIVE", f"member {member.name!r} is not a regular file")
            total += member.size
            if total > max_bytes:
                raise PackageError("TOO_LARGE", f"the package is larger than {max_bytes} bytes")
            name = member.name
            if name in (MANIFEST, SIGNATURE):
                limit = _MAX_MANIFEST_BYTES if name == MANIFEST else _MAX_SIGNATURE_BYTES
                if member.size > limit:
                    raise PackageError("BAD_ARCHIVE", f"{name} is larger than {limit} bytes")
                data = _member_bytes(tar, member)
                if (manifest if name == MANIFEST else signature) is not None:
                    raise PackageError("BAD_ARCHIVE", f"{name} appears twice")
                if name == MANIFEST:
                    manifest = data
                else:
                    signature = data
                continue
            if not name.startswith(FILES):
                raise PackageError("EXTRA_FILE", f"member {name!r} is not part of a package")
            path = _payload_path(name[len(FILES) :], f"member {name!r}")
            if path in digests:
                raise PackageError("BAD_ARCHIVE", f"member {name!r} appears twice")
            h = hashlib.sha256()
            extracted = tar.extractfile(member)
            if extracted is None:  # pragma: no cover - regular files always extract
                raise PackageError("BAD_ARCHIVE", f"member {name!r} cannot be read")
            chunks: list[bytes] = []
            read = 0
            while True:
                try:
                    chunk = extracted.read(_CHUNK)
                except (tarfile.TarError, EOFError, OSError) as err:
                    raise PackageError(
                        "TRUNCATED", f"member {name!r} is cut short ({err})"
                    ) from None
                if not chunk:
                    break
                read += len(chunk)
                h.update(chunk)
                if payload is not None:
                    chunks.append(chunk)
            if read != member.size:
                raise PackageError("TRUNCATED", f"member {name!r} is cut short")
            digests[path] = (read, h.hexdigest())
            if payload is not None:
                payload[path] = b"".join(chunks)
    if manifest is None:
        raise PackageError("BAD_ARCHIVE", f"no {MANIFEST} in the archive")
    return _Read(manifest, signature, digests, payload)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(member)
    try:
        data = b"" if extracted is None else extracted.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PackageError("TRUNCATED", f"member {member.name!r} is cut short ({err})") from None
    if len(data) != member.size:
        raise PackageError("TRUNCATED", f"member {member.name!r} is cut short")
    return data


def _check_files(manifest: Manifest, digests: Mapping[str, tuple[int, str]]) -> None:
    listed = {f.path: f for f in manifest.files}
    for path in sorted(set(digests) - set(listed)):
        raise PackageError("EXTRA_FILE", f"files/{path} is in the archive but not in the manifest")
    for entry in manifest.files:
        got = digests.get(entry.path)
        if got is None:
            raise PackageError("FILE_MISSING", f"files/{entry.path} is in the manifest but missing")
        size, digest = got
        if size != entry.size or digest != entry.sha256:
            raise PackageError(
                "FILE_MODIFIED",
                f"files/{entry.path} does not match the manifest (sha256 {digest[:12]}…, "
                f"expected {entry.sha256[:12]}…)",
            )


def _open(source: bytes | Path) -> IO[bytes]:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    try:
        return source.open("rb")
    except OSError as err:
        raise PackageError("UNREADABLE", f"{source}: cannot read ({err.strerror})") from None


def _digest(source: bytes | Path) -> tuple[str, int]:
    h = hashlib.sha256()
    if isinstance(source, bytes):
        h.update(source)
        return h.hexdigest(), len(source)
    size = 0
    with _open(source) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_manifest(source: bytes | Path, *, max_bytes: int = MAX_PACKAGE_BYTES) -> Manifest:
    """The manifest of a package, its files checked against it, signature NOT checked."""
    with _open(source) as f:
        read = _read(f, max_bytes=max_bytes, keep_payload=False)
    manifest = Manifest.parse(read.manifest_bytes)
    _check_files(manifest, read.digests)
    return manifest


def sign_package(
    source: bytes | Path,
    key: Ed25519PrivateKey,
    certificate: SigningCertificate,
    *,
    max_bytes: int = MAX_PACKAGE_BYTES,
) -> bytes:
    """The package signed by ``key`` (whose certificate it carries).

    The package's files are checked against its manifest first: a signer never signs a
    package whose content does not match what it lists. An existing signature is replaced.
    """
    if certificate.key_id != key_id(key.public_key()):
        raise PackageError(
            "BAD_KEY", f"the certificate is for signing key {certificate.key_id}, not this key"
        )
    with _open(source) as f:
        read = _read(f, max_bytes=max_bytes, keep_payload=True)
    manifest = Manifest.parse(read.manifest_bytes)
    _check_files(manifest, read.digests)
    assert read.payload is not None
    signature = json.dumps(
        {
            "certificate": certificate.to_json(),
            "signature": base64.b64encode(key.sign(read.manifest_bytes)).decode(),
        },
        indent=2,
        sort_keys=True,
    ).encode()
    out = io.BytesIO()
    members = [(MANIFEST, read.manifest_bytes), (SIGNATURE, signature)]
    members += [(FILES + p, read.payload[p]) for p in sorted(read.payload)]
    _write(out, members)
    return out.getvalue()


def verify_package(
    source: bytes | Path,
    trust: TrustRoot,
    *,
    installed_version: str | None = None,
    expected_sha256: str | None = None,
    now: dt.datetime | None = None,
    max_bytes: int = MAX_PACKAGE_BYTES,
) -> VerifiedPackage:
    """Check a package before it is installed; raises `PackageError` saying why not.

    Args:
        source: the package file or its bytes.
        trust: the root keys the edge trusts.
        installed_version: the edge's running version; a package that is not newer is
            refused (``ROLLBACK``): an attacker replaying an old, validly signed package
            with known bugs is the rollback attack.
        expected_sha256: the digest of the whole file the cloud announced for the
            download; a file that differs (cut short, padded) is refused
            (``DIGEST_MISMATCH``) before anything else is read.
        now: the time certificates are checked at (tests).
        max_bytes: bound on the package's size.
    """
    digest, size = _digest(source)
    if size > max_bytes:
        raise PackageError("TOO_LARGE", f"the package is {size} bytes, more than {max_bytes}")
    if expected_sha256 is not None and digest != expected_sha256:
        raise PackageError(
            "DIGEST_MISMATCH",
            f"the downloaded file ({size} bytes, sha256 {digest[:12]}…) is not the package "
            f"announced (sha256 {expected_sha256[:12]}…): cut short or altered in transit",
        )
    with _open(source) as f:
        read = _read(f, max_bytes=max_bytes, keep_payload=False)
    if read.signature_bytes is None:
        raise PackageError("UNSIGNED", f"the package has no {SIGNATURE}")
    try:
        sig = json.loads(read.signature_bytes)
    except (ValueError, UnicodeDecodeError) as err:
        raise PackageError("BAD_SIGNATURE", f"{SIGNATURE} is not JSON ({err})") from None
    if not isinstance(sig, dict):
        raise PackageError("BAD_SIGNATURE", f"{SIGNATURE} is not a JSON object")
    cert = SigningCertificate.from_json(sig.get("certificate"))
    trust.check(cert, now=now)
    raw_sig = sig.get("signature")
    try:
        signature = base64.b64decode(raw_sig if isinstance(raw_sig, str) else "", validate=True)
        cert.public_key.verify(signature, read.manifest_bytes)
    except (ValueError, InvalidSignature):
        raise PackageError(
            "BAD_SIGNATURE",
            f"{MANIFEST} is not signed by signing key {cert.key_id} (modified after signing?)",
        ) from None
    manifest = Manifest.parse(read.manifest_bytes)
    _check_files(manifest, read.digests)
    if installed_version is not None and semver.Version.parse(
        manifest.version
    ) <= semver.Version.parse(installed_version):
        raise PackageError(
            "ROLLBACK",
            f"the package is version {manifest.version}, not newer than the installed "
            f"{installed_version}",
        )
    return VerifiedPackage(manifest, cert.key_id, digest, size)


def package_id(version: str, sha256: str) -> str:
    """The id of a full package: its version and the first 16 hex digits of its digest.

    The cloud names packages this way in `UpgradeManifest`, and an edge derives the id of
    the package it runs the same way (``GetUpgradeManifestRequest.current_package_id``), so
    the cloud can pick the delta built for exactly that file.
    """
    return f"edge-{version}-{sha256[:16]}"


def payload_of(source: bytes | Path, *, max_bytes: int = MAX_PACKAGE_BYTES) -> dict[str, bytes]:
    """The payload files of a package (path → bytes); verify it first."""
    with _open(source) as f:
        read = _read(f, max_bytes=max_bytes, keep_payload=True)
    assert read.payload is not None
    return read.payload


def files_from_paths(paths: Iterable[Path]) -> dict[str, bytes]:
    """Payload files from disk, named by their base names (wheels)."""
    out: dict[str, bytes] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise PackageError("UNREADABLE", f"{path}: cannot read ({err.strerror})") from None
        if path.name in out:
            raise PackageError("BAD_MANIFEST", f"{path.name} is given twice")
        out[path.name] = data
    return out
