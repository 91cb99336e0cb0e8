"""The package store: published full packages and the deltas computed from them.

Files live under ``<data_dir>/upgrades`` (``packages/<id>.pkg``, ``deltas/<id>.delta``);
their rows in the fleet database (`PACKAGES`). A full package is accepted only when it
verifies under the configured trusted roots (the edges' own check, run before any edge
sees it); a version is published once. Deltas go from each of the ``max_delta_bases``
newest older versions to a target version, computed once (bsdiff is slow: seconds per
package) and kept while the version is the newest or the target of a live rollout; a
delta not smaller than the full package is not kept (the full one is served instead).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import semver
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.upgrades._schema import PACKAGES
from mesh import errors
from mesh.files import make_private_dir
from mesh.packages import (
    PackageError,
    TrustRoot,
    make_delta,
    package_id,
    read_delta_header,
    verify_package,
)

__all__ = ["DELTA", "DOMAIN", "FULL", "PackageStore", "StoredPackage"]

log = logging.getLogger("cloud.upgrades")

DOMAIN = "upgrades.hplus"
"""``ErrorInfo.domain`` of upgrade errors."""
FULL = "FULL"
DELTA = "DELTA"


@dataclasses.dataclass(frozen=True)
class StoredPackage:
    """One stored package (full or delta) and where its bytes are."""

    package_id: str
    kind: str
    version: str
    base_version: str
    base_sha256: str
    sha256: str
    size: int
    contract_release: str
    signing_key_id: str
    path: Path
    created_at: dt.datetime


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _vkey(version: str) -> semver.Version:
    return semver.Version.parse(version)


class PackageStore:
    """Publishes packages, computes deltas, finds what to serve.

    Args:
        engine: the fleet database (migrated with `migrate_upgrades`).
        directory: where package files live (``<data_dir>/upgrades``).
        trust: the root keys packages must be certified under; ``None`` refuses publishing.
        max_delta_bases: older versions a delta to a target is computed from.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        directory: Path,
        *,
        trust: TrustRoot | None = None,
        max_delta_bases: int = 10,
    ) -> None:
        self._engine = engine
        self._dir = directory
        self._trust = trust
        self._max_bases = max_delta_bases

    def _row(self, row: Any) -> StoredPackage:
        return StoredPackage(
            package_id=row.package_id,
            kind=row.kind,
            version=row.version,
            base_version=row.base_version,
            base_sha256=row.base_sha256,
            sha256=row.sha256,
            size=row.size,
            contract_release=row.contract_release,
            signing_key_id=row.signing_key_id,
            path=self._dir / row.file,
            created_at=_aware(row.created_at),
        )

    async def publish(self, source: Path) -> StoredPackage:
        """Verify a signed full package and store it; computes its deltas.

        Publishing the same file twice returns the stored package.

        Raises:
            errors.FailedPrecondition: no trusted root is configured, or the package does
                not verify (``ErrorInfo.reason`` is the `PackageError` reason), or another
                package is already published as this version.
        """
        if self._trust is None:
            raise errors.FailedPrecondition(
                "no trusted root keys are configured: set [upgrades] trusted_roots to the "
                "root public keys the edges trust",
                reason="NO_TRUSTED_ROOT",
                domain=DOMAIN,
            )
        try:
            verified = await asyncio.to_thread(verify_package, source, self._trust)
        except PackageError as err:
            raise errors.FailedPrecondition(
                f"{source}: {err.message}", reason=err.reason, domain=DOMAIN
            ) from None
        version = verified.manifest.version
        existing = await self._full(version)
        if existing is not None:
            if existing.sha256 == verified.sha256:
                return existing
            raise errors.FailedPrecondition(
                f"version {version} is already published as another package "
                f"(sha256 {existing.sha256[:12]}…); publish a new version",
                reason="VERSION_EXISTS",
                domain=DOMAIN,
            )
        pid = package_id(version, verified.sha256)
        relative = f"packages/{pid}.pkg"
        await asyncio.to_thread(self._copy, source, relative)
        stored = StoredPackage(
            package_id=pid,
            kind=FULL,
            version=version,
            base_version="",
            base_sha256="",
            sha256=verified.sha256,
            size=verified.size,
            contract_release=verified.manifest.contract_release,
            signing_key_id=verified.signing_key_id,
            path=self._dir / relative,
            created_at=dt.datetime.now(dt.UTC),
        )
        await self._insert(stored, relative)
        log.info("published %s (%s, %d bytes)", pid, version, verified.size)
        latest = await self.latest()
        if latest is not None:
            await self.ensure_deltas(latest.version)
        return stored

    def _copy(self, source: Path, relative: str) -> None:
        target = self._dir / relative
        make_private_dir(target.parent)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o600)
        tmp.replace(target)

    async def _insert(self, p: StoredPackage, relative: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                PACKAGES.insert().values(
                    package_id=p.package_id,
                    kind=p.kind,
                    version=p.version,
                    base_version=p.base_version,
                    base_sha256=p.base_sha256,
                    sha256=p.sha256,
                    size=p.size,
                    contract_release=p.contract_release,
                    signing_key_id=p.signing_key_id,
                    file=relative,
                    created_at=p.created_at,
                )
            )

    async def _select(self, *where: Any) -> list[StoredPackage]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(PACKAGES).where(*where))).all()
        return [self._row(r) for r in rows]

    async def _full(self, version: str) -> StoredPackage | None:
        found = await self._select(PACKAGES.c.kind == FULL, PACKAGES.c.version == version)
        return found[0] if found else None

    async def full(self, version: str) -> StoredPackage:
        """The full package of ``version``.

        Raises:
            errors.NotFound: no package of that version is published.
        """
        found = await self._full(version)
        if found is None:
            raise errors.NotFound(
                f"no package of version {version} is published (hplus fleet publish)",
                reason="NO_SUCH_VERSION",
                domain=DOMAIN,
            )
        return found

    async def get(self, pid: str) -> StoredPackage | None:
        """The package with that id, full or delta."""
        found = await self._select(PACKAGES.c.package_id == pid)
        return found[0] if found else None

    async def packages(self) -> list[StoredPackage]:
        """Every stored package, newest version first, full before delta."""
        found = await self._select(sa.true())
        return sorted(found, key=lambda p: (_vkey(p.version), p.kind == FULL), reverse=True)

    async def latest(self) -> StoredPackage | None:
        """The full package of the newest version."""
        fulls = [p for p in await self._select(PACKAGES.c.kind == FULL)]
        return max(fulls, key=lambda p: _vkey(p.version), default=None)

    async def delta_for(self, target: StoredPackage, base_package_id: str) -> StoredPackage | None:
        """The delta that turns the full package ``base_package_id`` into ``target``."""
        base = await self.get(base_package_id)
        if base is None or base.kind != FULL:
            return None
        found = await self._select(
            PACKAGES.c.kind == DELTA,
            PACKAGES.c.version == target.version,
            PACKAGES.c.base_sha256 == base.sha256,
        )
        return found[0] if found else None

    async def ensure_deltas(self, target_version: str, *, keep: Iterable[str] = ()) -> list[str]:
        """Compute the missing deltas to ``target_version``; prune deltas to other versions.

        Args:
            target_version: the version deltas lead to.
            keep: further target versions whose deltas stay (live rollouts).

        Returns:
            The ids of the deltas computed now.
        """
        target = await self.full(target_version)
        fulls = [
            p
            for p in await self._select(PACKAGES.c.kind == FULL)
            if _vkey(p.version) < _vkey(target_version)
        ]
        bases = sorted(fulls, key=lambda p: _vkey(p.version), reverse=True)[: self._max_bases]
        have = {
            p.base_sha256
            for p in await self._select(
                PACKAGES.c.kind == DELTA, PACKAGES.c.version == target_version
            )
        }
        made: list[str] = []
        for base in bases:
            if base.sha256 in have:
                continue
            delta = await asyncio.to_thread(_delta_bytes, base.path, target.path)
            if len(delta) >= target.size:
                log.info(
                    "no delta %s -> %s kept: %d bytes, not smaller than the package",
                    base.version,
                    target.version,
                    len(delta),
                )
                continue
            header, _ = read_delta_header(delta)
            assert header.to_sha256 == target.sha256
            sha = hashlib.sha256(delta).hexdigest()
            pid = f"delta-{base.version}-{target.version}-{sha[:16]}"
            relative = f"deltas/{pid}.delta"
            await asyncio.to_thread(self._write, relative, delta)
            await self._insert(
                StoredPackage(
                    package_id=pid,
                    kind=DELTA,
                    version=target.version,
                    base_version=base.version,
                    base_sha256=base.sha256,
                    sha256=sha,
                    size=len(delta),
                    contract_release=target.contract_release,
                    signing_key_id=target.signing_key_id,
                    path=self._dir / relative,
                    created_at=dt.datetime.now(dt.UTC),
                ),
                relative,
            )
            made.append(pid)
            log.info("delta %s: %d bytes (%s full)", pid, len(delta), target.size)
        await self._prune({target_version, *keep})
        return made

    def _write(self, relative: str, data: bytes) -> None:
        target = self._dir / relative
        make_private_dir(target.parent)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(target)

    async def _prune(self, keep: set[str]) -> None:
        latest = await self.latest()
        if latest is not None:
            keep.add(latest.version)
        stale = [p for p in await self._select(PACKAGES.c.kind == DELTA) if p.version not in keep]
        if not stale:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                PACKAGES.delete().where(PACKAGES.c.package_id.in_([p.package_id for p in stale]))
            )
        for p in stale:
            p.path.unlink(missing_ok=True)
            log.info("pruned delta %s", p.package_id)


def _delta_bytes(old: Path, new: Path) -> bytes:
    return make_delta(old.read_bytes(), new.read_bytes())
