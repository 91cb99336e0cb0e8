r"""Binary deltas between two packages (bsdiff4), checked on both ends.

A delta file is ``HPLUSDELTA1\\n``, one line of canonical JSON naming the two packages
(``from_version``, ``from_sha256``, ``to_version``, ``to_sha256``, ``to_size``), then a
bsdiff4 patch. `apply_delta` refuses a delta for another base, bounds the size it will
build (read from the patch header *before* bsdiff allocates it), and checks the result's
digest; the rebuilt package is then verified like a full download (`verify_package`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import bsdiff4  # type: ignore[import-untyped]

from mesh.packages._errors import PackageError
from mesh.packages._keys import canonical_json
from mesh.packages._package import MAX_PACKAGE_BYTES, Manifest, read_manifest

__all__ = ["DELTA_MAGIC", "DeltaHeader", "apply_delta", "make_delta", "read_delta_header"]

DELTA_MAGIC = b"HPLUSDELTA1\n"
_MAX_HEADER = 4096
_BSDIFF_MAGIC = b"BSDIFF40"


@dataclasses.dataclass(frozen=True)
class DeltaHeader:
    """Which package a delta applies to and which it produces."""

    from_version: str
    from_sha256: str
    to_version: str
    to_sha256: str
    to_size: int


def make_delta(old: bytes, new: bytes) -> bytes:
    """A delta that turns package ``old`` into package ``new``."""
    old_manifest: Manifest = read_manifest(old)
    new_manifest: Manifest = read_manifest(new)
    header = {
        "from_version": old_manifest.version,
        "from_sha256": hashlib.sha256(old).hexdigest(),
        "to_version": new_manifest.version,
        "to_sha256": hashlib.sha256(new).hexdigest(),
        "to_size": len(new),
    }
    patch: bytes = bsdiff4.diff(old, new)
    return DELTA_MAGIC + canonical_json(header) + b"\n" + patch


def read_delta_header(delta: bytes) -> tuple[DeltaHeader, bytes]:
    """The header of a delta and its bsdiff4 patch."""
    if not delta.startswith(DELTA_MAGIC):
        raise PackageError("BAD_DELTA", "not a package delta (magic missing)")
    end = delta.find(b"\n", len(DELTA_MAGIC), len(DELTA_MAGIC) + _MAX_HEADER)
    if end < 0:
        raise PackageError("BAD_DELTA", "the delta header is missing or too long")
    try:
        value = json.loads(delta[len(DELTA_MAGIC) : end])
        header = DeltaHeader(
            from_version=str(value["from_version"]),
            from_sha256=str(value["from_sha256"]),
            to_version=str(value["to_version"]),
            to_sha256=str(value["to_sha256"]),
            to_size=int(value["to_size"]),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise PackageError("BAD_DELTA", f"the delta header is malformed ({err})") from None
    return header, delta[end + 1 :]


def _offtin(buf: bytes) -> int:
    value = int.from_bytes(buf[:7] + bytes([buf[7] & 0x7F]), "little")
    return -value if buf[7] & 0x80 else value


def apply_delta(old: bytes, delta: bytes, *, max_bytes: int = MAX_PACKAGE_BYTES) -> bytes:
    """Rebuild the new package from the installed one and a delta.

    Raises:
        PackageError: ``DELTA_BASE_MISMATCH`` (the delta is for another installed package),
            ``TOO_LARGE``, ``BAD_DELTA`` (malformed patch) or ``DELTA_RESULT_MISMATCH``
            (the patch does not produce the package it names).
    """
    header, patch = read_delta_header(delta)
    base = hashlib.sha256(old).hexdigest()
    if base != header.from_sha256:
        raise PackageError(
            "DELTA_BASE_MISMATCH",
            f"the delta applies to package {header.from_sha256[:12]}… "
            f"({header.from_version}), not the installed {base[:12]}…",
        )
    if not 0 < header.to_size <= max_bytes:
        raise PackageError(
            "TOO_LARGE", f"the delta builds {header.to_size} bytes (max {max_bytes})"
        )
    if len(patch) < 32 or patch[:8] != _BSDIFF_MAGIC:
        raise PackageError("BAD_DELTA", "the patch is not a bsdiff4 patch")
    if _offtin(patch[24:32]) != header.to_size:
        raise PackageError("BAD_DELTA", "the patch's size disagrees with the delta header")
    try:
        new: bytes = bsdiff4.patch(old, patch)
    except (ValueError, MemoryError, OverflowError) as err:
        raise PackageError("BAD_DELTA", f"the patch is damaged ({err})") from None
    got = hashlib.sha256(new).hexdigest()
    if got != header.to_sha256:
        raise PackageError(
            "DELTA_RESULT_MISMATCH",
            f"the delta produced {got[:12]}…, not the package it names "
            f"({header.to_sha256[:12]}…, {header.to_version})",
        )
    return new
