"""The release store: immutable releases, movable labels, lifecycle, audit log.

Every change and its audit row are written in one transaction, so nothing is half-written.
Uniqueness of versions and digests is enforced by the database, not by a read before the
write: of two concurrent pushes of one version exactly one insert succeeds, and the loser
re-reads and answers ``created=False`` (same image) or ``AlreadyExists`` (different image).

:class:`ReleaseStore` is put together from one part per responsibility, each a private
module: the shared state and reads (:mod:`cloud.registry._storecore`), the audit log
(:mod:`cloud.registry._audit`), pushes and the push policy (:mod:`cloud.registry._pushes`),
labels (:mod:`cloud.registry._labels`) and lifecycle (:mod:`cloud.registry._lifecycle`);
the queries (get, list, check, diff) are here.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Sequence

import semver
import sqlalchemy as sa

import compat
from cloud.registry import _check
from cloud.registry._check import Side
from cloud.registry._errors import InvalidArgument
from cloud.registry._image import load_image
from cloud.registry._labels import _Labels
from cloud.registry._lifecycle import _Lifecycle
from cloud.registry._model import Lifecycle, ReleaseInfo, Selector
from cloud.registry._pushes import _Pushes
from cloud.registry._schema import LABELS, RELEASES
from cloud.registry._storecore import (
    _BASIC,
    FieldUsage,
    _check_approvals,
    _check_label,
    _Partial,
    parse_version,
)
from hplus.cloud.v1 import registry_pb2

__all__ = ["FieldUsage", "ReleaseStore", "parse_version"]

_DEFAULT_PAGE = 50
_MAX_PAGE = 500


class ReleaseStore(_Pushes, _Labels, _Lifecycle):
    """Releases, labels and lifecycle in the registry database, with the push policy.

    Args:
        engine: the registry database (migrated).
        policy: what a push must pass.
        field_usage: optional census hook; a release some edge still reports cannot be
            retired.
    """

    async def get(
        self, selector: Selector, *, full: bool = False, changes: bool = False
    ) -> ReleaseInfo:
        """One release.

        Args:
            selector: which one.
            full: include the image bytes.
            changes: include the stored change list against the previous release.

        Raises:
            NotFound: nothing matches.
            InvalidArgument: the selector is malformed.
        """
        async with self._engine.connect() as conn:
            rid = await self._resolve(conn, selector, "release")
            return await self._by_id(conn, rid, full=full, changes=changes)

    async def list_releases(
        self,
        *,
        lifecycles: Iterable[Lifecycle] = (),
        label: str | None = None,
        major: int | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[ReleaseInfo], str]:
        """Releases, highest version first (without images).

        Args:
            lifecycles: only these states (empty: any).
            label: only the release this label points at.
            major: only this major version.
            page_size: 0 for the default (50); capped at 500.
            page_token: from a previous call; empty for the first page.

        Returns:
            The page and the next page's token ('' on the last page).

        Raises:
            InvalidArgument: a bad page size, page token or label.
        """
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(page_size or _DEFAULT_PAGE, _MAX_PAGE)
        after: semver.Version | None = None
        if page_token:
            try:
                after = semver.Version.parse(base64.urlsafe_b64decode(page_token).decode())
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument("page_token", "not a token this registry issued") from None
        states = set(lifecycles)
        async with self._engine.connect() as conn:
            rows = await self._rows(conn)
            if label is not None:
                _check_label(label, "label")
                target = (
                    await conn.execute(sa.select(LABELS.c.release_id).where(LABELS.c.name == label))
                ).scalar()
                rows = [r for r in rows if r.release_id == target]
            rows = [
                r
                for r in rows
                if (not states or r.lifecycle in states)
                and (major is None or r.semver.major == major)
                and (after is None or r.semver < after)
            ]
            page = rows[:size]
            ids = [r.release_id for r in page]
            found = {
                r.release_id: r
                for r in (
                    await conn.execute(sa.select(*_BASIC).where(RELEASES.c.release_id.in_(ids)))
                ).all()
            }
            labels = await self._labels_of(conn, ids)
        infos = [
            self._info(_Partial(found[i], image=b""), labels.get(i, [])) for i in ids if i in found
        ]
        token = ""
        if len(rows) > size and page:
            token = base64.urlsafe_b64encode(page[-1].version.encode()).decode()
        return infos, token

    async def check(
        self,
        *,
        image: bytes | None = None,
        selector: Selector | None = None,
        candidate_version: str = "",
        window_size: int = 0,
        directions: Sequence[registry_pb2.CheckDirection.ValueType] = (),
        categories: Sequence[compat.Category] = (),
        approvals: Iterable[str] = (),
        counts_only: bool = False,
    ) -> registry_pb2.CompatibilityReport:
        """Check a candidate against the window without storing anything.

        Args:
            image: a candidate image, or
            selector: a stored release to re-check.
            candidate_version: picks the window (releases below it); default the stored
                release's version, or the highest releases for an image.
            window_size: 0 for the policy's.
            directions: empty for both.
            categories: empty for the policy's.
            approvals: fingerprints to treat as approved, on top of those recorded.
            counts_only: leave findings out of the rows.

        Raises:
            InvalidArgument: a malformed candidate, version or approval.
            NotFound: the selected release does not exist.
        """
        if window_size < 0:
            raise InvalidArgument("window_size", "must not be negative")
        fps = set(_check_approvals(approvals, "approvals"))
        version = (
            parse_version(candidate_version, field="candidate_version")
            if (candidate_version)
            else None
        )
        dirs = tuple(directions) or (
            registry_pb2.CHECK_DIRECTION_BACKWARD,
            registry_pb2.CHECK_DIRECTION_FORWARD,
        )
        async with self._engine.connect() as conn:
            rows = await self._rows(conn)
            if selector is not None:
                info = await self._by_id(conn, await self._resolve(conn, selector, "candidate"))
                loaded = await self._load(conn, next(r for r in rows if r.digest == info.digest))
                digest = info.digest
                fps.update(info.approvals)
                version = version or semver.Version.parse(info.version)
                side = Side(info.version, loaded)
            elif image is not None:
                try:
                    img = await asyncio.to_thread(load_image, image, label="candidate")
                except InvalidArgument as err:
                    raise InvalidArgument("candidate_image", err.description) from None
                digest = img.digest
                side = Side(candidate_version or "candidate", img.loaded)
            else:
                raise InvalidArgument("candidate", "required: set candidate_image or a release")
            window = self._window(rows, version, window_size or self.policy.window_size, digest)
            fps.update(await self._approvals_below(conn, version, rows))
            return await self._matrix(
                conn,
                side,
                digest,
                window,
                directions=dirs,
                categories=tuple(categories) or self.policy.categories,
                approvals=fps,
                counts_only=counts_only,
            )

    async def diff(
        self,
        base: Selector,
        *,
        target: Selector | None = None,
        target_image: bytes | None = None,
        categories: Sequence[compat.Category] = (),
        approvals: Iterable[str] = (),
    ) -> tuple[ReleaseInfo, ReleaseInfo | str, compat.DiffResult, list[registry_pb2.Finding]]:
        """Compare two releases (or a release and a candidate image).

        Returns:
            The base release, the target release (or the candidate's digest), the compat
            result and the translated findings.

        Raises:
            InvalidArgument: a malformed selector, image or approval.
            NotFound: a selected release does not exist.
        """
        fps = set(_check_approvals(approvals, "approvals"))
        cats = tuple(categories) or self.policy.categories
        async with self._engine.connect() as conn:
            rows = await self._rows(conn)
            by_digest = {r.digest: r for r in rows}
            base_info = await self._by_id(conn, await self._resolve(conn, base, "base"))
            base_side = Side(base_info.version, await self._load(conn, by_digest[base_info.digest]))
            target_info: ReleaseInfo | str
            if target is not None:
                info = await self._by_id(conn, await self._resolve(conn, target, "target_release"))
                fps.update(info.approvals)
                target_side = Side(info.version, await self._load(conn, by_digest[info.digest]))
                target_info = info
            elif target_image is not None:
                try:
                    img = await asyncio.to_thread(load_image, target_image, label="candidate")
                except InvalidArgument as err:
                    raise InvalidArgument("target_image", err.description) from None
                target_side = Side("candidate", img.loaded)
                target_info = img.digest
            else:
                raise InvalidArgument("target", "required: set target_release or target_image")
        result, findings = await asyncio.to_thread(
            _check.compare, base_side, target_side, categories=cats, approvals=fps
        )
        return base_info, target_info, result, findings
