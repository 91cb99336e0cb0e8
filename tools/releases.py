"""Frozen contract releases: descriptor images kept in the repository.

A release is the whole contract tree compiled by protoc into one self-contained
``FileDescriptorSet`` (imports and source info included), stored as
``proto/releases/<version>.binpb`` beside ``<version>.binpb.sha256`` (``sha256sum`` format).
Compat checks and ``buf breaking`` read these images, so neither needs git history nor a
running registry. A frozen release is never rewritten. Images from 1.1.0 on are written in
the registry's canonical form, so a frozen release and the same release pushed to a
registry have the same digest (1.0.0 predates that and keeps protoc's file order).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import semver

from cloud.registry import canonical_image
from compat import ProtoCompileError, compile_protos

__all__ = [
    "PROTO_ROOT",
    "RELEASES_DIR",
    "Release",
    "ReleaseError",
    "freeze",
    "latest_release",
    "list_releases",
    "parse_version",
]

PROTO_ROOT = Path("proto")
RELEASES_DIR = PROTO_ROOT / "releases"


class ReleaseError(Exception):
    """A release cannot be frozen, found or read; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Release:
    """One frozen release on disk."""

    version: semver.Version
    """The release's semantic version."""
    image: Path
    """Path of the descriptor image (``<version>.binpb``)."""
    digest: str
    """Hex sha256 of the image bytes, as recorded beside it."""


def parse_version(text: str) -> semver.Version:
    """Parse a semantic version such as ``1.3.0``.

    Raises:
        ReleaseError: ``text`` is not a semantic version.
    """
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise ReleaseError(
            f"invalid release version {text!r}: expected MAJOR.MINOR.PATCH, e.g. 1.0.0"
        ) from None


def _digest_path(image: Path) -> Path:
    return image.with_name(image.name + ".sha256")


def list_releases(releases_dir: Path = RELEASES_DIR) -> list[Release]:
    """Every frozen release in ``releases_dir``, oldest first.

    Raises:
        ReleaseError: an image has no digest file, or its bytes do not match the digest.
    """
    found: list[Release] = []
    if not releases_dir.is_dir():
        return found
    for image in releases_dir.glob("*.binpb"):
        version = parse_version(image.name.removesuffix(".binpb"))
        dpath = _digest_path(image)
        if not dpath.is_file():
            raise ReleaseError(f"{image}: digest file {dpath.name} is missing")
        recorded = dpath.read_text().split()[0] if dpath.read_text().strip() else ""
        actual = hashlib.sha256(image.read_bytes()).hexdigest()
        if recorded != actual:
            raise ReleaseError(
                f"{image}: sha256 is {actual} but {dpath.name} records {recorded or 'nothing'}"
            )
        found.append(Release(version=version, image=image, digest=actual))
    return sorted(found, key=lambda r: r.version)


def latest_release(releases_dir: Path = RELEASES_DIR) -> Release:
    """The newest frozen release.

    Raises:
        ReleaseError: there is none.
    """
    releases = list_releases(releases_dir)
    if not releases:
        raise ReleaseError(f"no frozen release in {releases_dir}")
    return releases[-1]


def freeze(
    version: str, *, proto_root: Path = PROTO_ROOT, releases_dir: Path = RELEASES_DIR
) -> Release:
    """Compile ``proto_root`` and freeze it as release ``version``.

    Args:
        version: the new release's semantic version; must be newer than every frozen one.
        proto_root: the contract tree to compile.
        releases_dir: where images and digests are kept.

    Returns:
        The release just written.

    Raises:
        ReleaseError: the version is invalid, already frozen (never rewritten) or not newer
            than the latest release, or the contracts do not compile.
    """
    ver = parse_version(version)
    image = releases_dir / f"{ver}.binpb"
    if image.exists() or _digest_path(image).exists():
        raise ReleaseError(
            f"release {ver} is frozen already ({image}); a frozen release is never rewritten"
        )
    existing = list_releases(releases_dir)
    if existing and ver <= existing[-1].version:
        raise ReleaseError(
            f"release {ver} is not newer than the latest frozen release {existing[-1].version}"
        )
    # The release tree itself must not be compiled into the image.
    files = [f for f in _contract_files(proto_root, releases_dir)]
    try:
        fds = compile_protos(proto_root, files=files)
    except ProtoCompileError as err:
        raise ReleaseError(f"cannot freeze {ver}: {err}") from None
    # The registry's canonical form (dependency order, ties by name, deterministic bytes), so
    # the digest written here is the digest the registry computes for the same release.
    data = canonical_image(fds)
    digest = hashlib.sha256(data).hexdigest()
    releases_dir.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name and rename, so a crash never leaves half an image.
    tmp = image.with_name(image.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(image)
    _digest_path(image).write_text(f"{digest}  {image.name}\n")
    return Release(version=ver, image=image, digest=digest)


def _contract_files(proto_root: Path, releases_dir: Path) -> list[str]:
    rel_skip = releases_dir.resolve()
    out = []
    for p in sorted(proto_root.rglob("*.proto")):
        if rel_skip in p.resolve().parents:
            continue
        out.append(p.relative_to(proto_root).as_posix())
    return out
