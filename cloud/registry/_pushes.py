"""Pushes: a new immutable release, checked by the push policy, stored once per version."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import semver
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.registry import _check
from cloud.registry._audit import _AuditLog
from cloud.registry._check import Side
from cloud.registry._errors import AlreadyExists, BreakingChanges, InvalidArgument
from cloud.registry._image import Image, load_image
from cloud.registry._model import Lifecycle, PushOutcome, ReleaseInfo
from cloud.registry._schema import LABELS, RELEASES
from cloud.registry._storecore import (
    _check_approvals,
    _check_label,
    _check_request_id,
    _now,
    _Row,
    parse_version,
)
from hplus.cloud.v1 import registry_pb2

__all__: list[str] = []

log = logging.getLogger(__name__)


class _Pushes(_AuditLog):
    """Pushes releases (see :meth:`push`)."""

    async def push(
        self,
        *,
        version: str,
        image: bytes,
        actor: str,
        notes: str = "",
        labels: Sequence[str] = (),
        approvals: Iterable[str] = (),
        window_size: int = 0,
        expected_digest: str | None = None,
        validate_only: bool = False,
        request_id: str = "",
    ) -> PushOutcome:
        """Publish a release after the compat check; see ``PushRelease`` in registry.proto.

        Args:
            version: semver to publish under.
            image: the descriptor image as pushed (stored in canonical form).
            actor: who pushes (recorded).
            notes: release notes.
            labels: labels to point at the new release.
            approvals: fingerprints of intended breaks.
            window_size: 0 for the policy's.
            expected_digest: hex SHA-256 the client computed (of the bytes it sent, or of
                their canonical form).
            validate_only: check everything, store nothing.
            request_id: the client's idempotency key (recorded in the audit log; a repeated
                push is idempotent by content anyway).

        Raises:
            InvalidArgument: bad version, image, label, approval or digest.
            AlreadyExists: the version holds another image, or the image another version.
            BreakingChanges: unapproved ERROR findings against the window.
        """
        _check_request_id(request_id)
        ver = parse_version(version)
        for name in labels:
            _check_label(name, "labels")
        fps = _check_approvals(approvals, "approvals")
        if window_size < 0:
            raise InvalidArgument("window_size", "must not be negative")
        img = await asyncio.to_thread(load_image, image, label=version)
        if expected_digest is not None and expected_digest not in (
            img.digest,
            hashlib.sha256(image).hexdigest(),
        ):
            raise InvalidArgument(
                "expected_digest",
                f"the image received hashes to sha256:{hashlib.sha256(image).hexdigest()}",
            )
        async with self._engine.connect() as conn:
            rows = await self._rows(conn)
            existing = await self._existing(conn, version, img)
            if existing is not None:
                report = await self._push_report(conn, img, ver, rows, window_size, fps)
                return PushOutcome(existing, False, report)
            report = await self._push_report(conn, img, ver, rows, window_size, fps)
            block = [
                fp
                for row in report.rows
                for cell in row.results
                for fp in _check.blocking(cell.findings)
            ]
            if block:
                raise BreakingChanges(report, list(dict.fromkeys(block)))
            previous = next((r for r in rows if r.semver < ver), None)
            changes: dict[str, Any] = {}
            if previous is not None:
                in_force = await self._approvals_below(conn, ver, rows) | set(fps)
                result, _ = await asyncio.to_thread(
                    _check.compare,
                    Side(previous.version, await self._load(conn, previous)),
                    Side(version, img.loaded),
                    categories=self.policy.categories,
                    approvals=in_force,
                )
                changes = result.to_json()
        now = _now()
        values = {
            "version": version,
            "major": ver.major,
            "digest_sha256": img.digest,
            "image": img.data,
            "image_size": len(img.data),
            "lifecycle": Lifecycle.ACTIVE.value,
            "lifecycle_changed_at": now,
            "notes": notes,
            "approvals_json": json.dumps(list(fps)),
            "files_json": json.dumps(list(img.files)),
            "services_json": json.dumps(list(img.services)),
            "previous_version": previous.version if previous else None,
            "changes_json": json.dumps(changes, sort_keys=True),
            "push_actor": actor,
            "created_at": now,
        }
        info = ReleaseInfo(
            version=version,
            digest=img.digest,
            image_size=len(img.data),
            lifecycle=Lifecycle.ACTIVE,
            lifecycle_changed_at=now,
            notes=notes,
            approvals=fps,
            files=img.files,
            services=img.services,
            push_actor=actor,
            created_at=now,
            previous_version=previous.version if previous else None,
            labels=tuple(sorted(set(labels))),
            image=img.data,
            changes=changes,
        )
        if validate_only:
            return PushOutcome(info, True, report)
        try:
            async with self._engine.begin() as conn:
                rid = (
                    await conn.execute(
                        RELEASES.insert().values(**values).returning(RELEASES.c.release_id)
                    )
                ).scalar_one()
                for name in sorted(set(labels)):
                    await self._point(conn, name, rid, actor, now)
                await self._audit(
                    conn,
                    actor,
                    "release.push",
                    version,
                    digest=img.digest,
                    labels=sorted(set(labels)),
                    approvals=list(fps),
                    window=[r.release.version for r in report.rows],
                    request_id=request_id,
                )
        except IntegrityError:
            # Lost a race with a concurrent push; answer as if it had come first.
            async with self._engine.connect() as conn:
                existing = await self._existing(conn, version, img)
            if existing is None:
                raise
            return PushOutcome(existing, False, report)
        log.info("release %s (sha256:%s) pushed by %s", version, img.digest, actor)
        return PushOutcome(info, True, report)

    async def _push_report(
        self,
        conn: AsyncConnection,
        img: Image,
        ver: semver.Version,
        rows: list[_Row],
        window_size: int,
        fps: Iterable[str],
    ) -> registry_pb2.CompatibilityReport:
        window = self._window(rows, ver, window_size or self.policy.window_size, img.digest)
        in_force = await self._approvals_below(conn, ver, rows) | set(fps)
        return await self._matrix(
            conn,
            Side(str(ver), img.loaded),
            img.digest,
            window,
            directions=self.policy.directions,
            categories=self.policy.categories,
            approvals=in_force,
        )

    async def _existing(
        self, conn: AsyncConnection, version: str, img: Image
    ) -> ReleaseInfo | None:
        """The stored release identical to this push, or ``None`` when there is none.

        Raises:
            AlreadyExists: the version or the image is taken by a different release.
        """
        # One statement, so both questions are answered from the same snapshot even while
        # a concurrent push commits.
        rows = (
            await conn.execute(
                sa.select(
                    RELEASES.c.release_id, RELEASES.c.version, RELEASES.c.digest_sha256
                ).where(
                    sa.or_(RELEASES.c.version == version, RELEASES.c.digest_sha256 == img.digest)
                )
            )
        ).all()
        for row in rows:
            if row.version != version:
                continue
            if row.digest_sha256 != img.digest:
                raise AlreadyExists(
                    f"version {version} exists with a different image "
                    f"(sha256:{row.digest_sha256}); a release is never overwritten"
                )
            return await self._by_id(conn, row.release_id)
        if rows:
            raise AlreadyExists(
                f"this image (sha256:{img.digest}) is already release {rows[0].version}"
            )
        return None

    async def _point(
        self, conn: AsyncConnection, name: str, release_id: int, actor: str, now: dt.datetime
    ) -> str | None:
        """Point a label at a release inside a transaction; returns the previous version."""
        prev = (
            await conn.execute(
                sa.select(RELEASES.c.version)
                .select_from(LABELS.join(RELEASES))
                .where(LABELS.c.name == name)
            )
        ).scalar()
        if prev is None:
            await conn.execute(
                LABELS.insert().values(
                    name=name, release_id=release_id, updated_at=now, updated_by=actor
                )
            )
        else:
            await conn.execute(
                LABELS.update()
                .where(LABELS.c.name == name)
                .values(release_id=release_id, updated_at=now, updated_by=actor)
            )
        return None if prev is None else str(prev)
