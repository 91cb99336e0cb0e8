"""The release store: immutable releases, movable labels, lifecycle, audit log.

Every change and its audit row are written in one transaction, so nothing is half-written.
Uniqueness of versions and digests is enforced by the database, not by a read before the
write: of two concurrent pushes of one version exactly one insert succeeds, and the loser
re-reads and answers ``created=False`` (same image) or ``AlreadyExists`` (different image).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import semver
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import compat
from cloud.registry import _check
from cloud.registry._check import PushPolicy, Side
from cloud.registry._convert import digest_pb, release_pb
from cloud.registry._errors import (
    AlreadyExists,
    BreakingChanges,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from cloud.registry._image import Image, load_image
from cloud.registry._model import (
    AuditEntry,
    LabelInfo,
    Lifecycle,
    PushOutcome,
    ReleaseInfo,
    Selector,
)
from cloud.registry._schema import AUDIT, LABELS, RELEASES, REQUESTS
from hplus.cloud.v1 import registry_pb2
from mesh.retry import RetryPolicy

__all__ = ["FieldUsage", "ReleaseStore", "parse_version"]

log = logging.getLogger(__name__)

FieldUsage = Callable[[str], Awaitable[int]]
"""How many edges in the field still report a release (the field census hook)."""

_LABEL = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_DEFAULT_PAGE = 50
_MAX_PAGE = 500
_CACHE = 16
_WINDOW_STATES = (Lifecycle.ACTIVE.value, Lifecycle.DEPRECATED.value)
# A label write that lost a race to create the same label is tried once more: the second
# attempt sees the winner's row and moves it with compare-and-set instead.
_LOST_CREATE_RACE = RetryPolicy(initial=0.01, maximum=0.01, attempts=2, deadline=None)


def _lost_create_race(err: BaseException) -> bool:
    """A concurrent insert of the same unique row won (its commit came first)."""
    return isinstance(err, IntegrityError)


def parse_version(text: str, *, field: str = "version") -> semver.Version:
    """Parse a semver 2.0 version without a leading ``v``.

    Raises:
        InvalidArgument: ``text`` is not a semantic version (names ``field``).
    """
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidArgument(
            field, f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.0)"
        ) from None


def _check_label(name: str, field: str) -> None:
    if not _LABEL.match(name):
        raise InvalidArgument(field, f"{name!r} is not a label name ([a-z][a-z0-9-]{{0,62}})")


def _check_request_id(request_id: str) -> None:
    if request_id and not _REQUEST_ID.match(request_id):
        raise InvalidArgument("request_id", "1-64 letters, digits or '-' (a UUID)")


def _check_approvals(approvals: Iterable[str], field: str) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for fp in approvals:
        if not _FINGERPRINT.match(fp):
            raise InvalidArgument(field, f"{fp!r} is not a fingerprint (16 lower-case hex digits)")
        out.setdefault(fp, None)
    return tuple(sorted(out))


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class _Row:
    """The light columns of a release, for window and ordering decisions."""

    release_id: int
    version: str
    semver: semver.Version
    digest: str
    lifecycle: Lifecycle


_LIGHT = (
    RELEASES.c.release_id,
    RELEASES.c.version,
    RELEASES.c.digest_sha256,
    RELEASES.c.lifecycle,
)
_BASIC = [c for c in RELEASES.c if c.name not in ("image", "changes_json")]


class ReleaseStore:
    """Releases, labels and lifecycle in the registry database, with the push policy.

    Args:
        engine: the registry database (migrated).
        policy: what a push must pass.
        field_usage: optional census hook; a release some edge still reports cannot be
            retired.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: PushPolicy | None = None,
        field_usage: FieldUsage | None = None,
    ) -> None:
        self._engine = engine
        self.policy = policy or PushPolicy()
        self._field_usage = field_usage
        # Releases are immutable, so an indexed image never goes stale.
        self._loaded: collections.OrderedDict[str, compat.LoadedInput] = collections.OrderedDict()

    # --- reads ---------------------------------------------------------------------------

    async def _rows(self, conn: AsyncConnection) -> list[_Row]:
        """Every release, highest version first."""
        rows = (await conn.execute(sa.select(*_LIGHT))).all()
        out = [
            _Row(
                r.release_id,
                r.version,
                semver.Version.parse(r.version),
                r.digest_sha256,
                Lifecycle(r.lifecycle),
            )
            for r in rows
        ]
        out.sort(key=lambda r: r.semver, reverse=True)
        return out

    async def _labels_of(self, conn: AsyncConnection, ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        if not ids:
            return out
        rows = (
            await conn.execute(
                sa.select(LABELS.c.release_id, LABELS.c.name)
                .where(LABELS.c.release_id.in_(ids))
                .order_by(LABELS.c.name)
            )
        ).all()
        for r in rows:
            out.setdefault(r.release_id, []).append(r.name)
        return out

    def _info(
        self, row: Any, labels: Iterable[str], *, full: bool = False, changes: bool = False
    ) -> ReleaseInfo:
        return ReleaseInfo(
            version=row.version,
            digest=row.digest_sha256,
            image_size=row.image_size,
            lifecycle=Lifecycle(row.lifecycle),
            lifecycle_changed_at=_aware(row.lifecycle_changed_at),
            notes=row.notes,
            approvals=tuple(json.loads(row.approvals_json)),
            files=tuple(json.loads(row.files_json)),
            services=tuple(json.loads(row.services_json)),
            push_actor=row.push_actor,
            created_at=_aware(row.created_at),
            previous_version=row.previous_version,
            labels=tuple(labels),
            image=bytes(row.image) if full else None,
            changes=json.loads(row.changes_json) if changes else None,
        )

    async def _resolve(self, conn: AsyncConnection, sel: Selector, field: str) -> int:
        """The release id a selector names."""
        if sel.version is not None:
            parse_version(sel.version, field=f"{field}.version")
            query = sa.select(RELEASES.c.release_id).where(RELEASES.c.version == sel.version)
            kind, name = "release", sel.version
        elif sel.label is not None:
            _check_label(sel.label, f"{field}.label")
            query = sa.select(LABELS.c.release_id).where(LABELS.c.name == sel.label)
            kind, name = "label", sel.label
        elif sel.digest is not None:
            query = sa.select(RELEASES.c.release_id).where(RELEASES.c.digest_sha256 == sel.digest)
            kind, name = "release", f"sha256:{sel.digest}"
        else:
            raise InvalidArgument(field, "required: set version, label or digest")
        found = (await conn.execute(query)).scalar()
        if found is None:
            raise NotFound(kind, name)
        return int(found)

    async def _by_id(
        self, conn: AsyncConnection, release_id: int, *, full: bool = False, changes: bool = False
    ) -> ReleaseInfo:
        cols = list(RELEASES.c) if full or changes else _BASIC
        row = (
            await conn.execute(sa.select(*cols).where(RELEASES.c.release_id == release_id))
        ).one()
        labels = (await self._labels_of(conn, [release_id])).get(release_id, [])
        source: Any = row if full else _Partial(row, image=b"")
        return self._info(source, labels, full=full, changes=changes)

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

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(AUDIT).order_by(AUDIT.c.audit_id.desc()).limit(limit))
            ).all()
        return [
            AuditEntry(
                at=_aware(r.at),
                actor=r.actor,
                action=r.action,
                target=r.target,
                details=json.loads(r.details_json),
            )
            for r in rows
        ]

    # --- compat --------------------------------------------------------------------------

    async def _load(self, conn: AsyncConnection, row: _Row) -> compat.LoadedInput:
        cached = self._loaded.get(row.digest)
        if cached is not None:
            self._loaded.move_to_end(row.digest)
            return cached
        data = (
            await conn.execute(
                sa.select(RELEASES.c.image).where(RELEASES.c.release_id == row.release_id)
            )
        ).scalar_one()
        image = await asyncio.to_thread(load_image, bytes(data), label=row.version)
        self._loaded[row.digest] = image.loaded
        while len(self._loaded) > _CACHE:
            self._loaded.popitem(last=False)
        return image.loaded

    async def _approvals_below(
        self, conn: AsyncConnection, version: semver.Version | None, rows: list[_Row]
    ) -> set[str]:
        # An approved break stays approved: checks against older releases in the window
        # see the same change again, and it must not be flagged a second time.
        ids = [r.release_id for r in rows if version is None or r.semver <= version]
        if not ids:
            return set()
        found = (
            await conn.execute(
                sa.select(RELEASES.c.approvals_json).where(RELEASES.c.release_id.in_(ids))
            )
        ).scalars()
        out: set[str] = set()
        for text in found:
            out.update(json.loads(text))
        return out

    def _window(
        self, rows: list[_Row], version: semver.Version | None, size: int, exclude: str = ""
    ) -> list[_Row]:
        return [
            r
            for r in rows
            if r.lifecycle.value in _WINDOW_STATES
            and r.digest != exclude
            and (version is None or r.semver < version)
        ][:size]

    async def _matrix(
        self,
        conn: AsyncConnection,
        candidate: Side,
        candidate_digest: str,
        window: list[_Row],
        *,
        directions: Sequence[registry_pb2.CheckDirection.ValueType],
        categories: Sequence[compat.Category],
        approvals: Iterable[str],
        counts_only: bool = False,
    ) -> registry_pb2.CompatibilityReport:
        approved = frozenset(approvals)
        rows: list[registry_pb2.CheckRow] = []
        infos: dict[int, ReleaseInfo] = {}
        if window:
            labels = await self._labels_of(conn, [r.release_id for r in window])
            for r in window:
                info = await self._by_id(conn, r.release_id)
                infos[r.release_id] = dataclasses.replace(
                    info, labels=tuple(labels.get(r.release_id, []))
                )
        for r in window:
            prev = Side(r.version, await self._load(conn, r))
            row = registry_pb2.CheckRow(release=release_pb(infos[r.release_id]))
            for d in sorted(set(directions)):
                old, new = (
                    (prev, candidate)
                    if d == registry_pb2.CHECK_DIRECTION_BACKWARD
                    else (
                        candidate,
                        prev,
                    )
                )
                _, findings = await asyncio.to_thread(
                    _check.compare, old, new, categories=categories, approvals=approved
                )
                row.results.append(_check.direction_result(d, findings, counts_only=counts_only))
            rows.append(row)
        return _check.report_of(digest_pb(candidate_digest), rows)

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

    # --- writes --------------------------------------------------------------------------

    async def _audit(
        self, conn: AsyncConnection, actor: str, action: str, target: str, **details: Any
    ) -> None:
        await conn.execute(
            AUDIT.insert().values(
                at=_now(),
                actor=actor,
                action=action,
                target=target,
                details_json=json.dumps(details, sort_keys=True),
            )
        )

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

    async def _label(self, conn: AsyncConnection, name: str) -> LabelInfo | None:
        row = (
            await conn.execute(
                sa.select(
                    LABELS.c.name,
                    LABELS.c.updated_at,
                    LABELS.c.updated_by,
                    RELEASES.c.version,
                    RELEASES.c.digest_sha256,
                )
                .select_from(LABELS.join(RELEASES))
                .where(LABELS.c.name == name)
            )
        ).first()
        if row is None:
            return None
        return LabelInfo(
            name=row.name,
            version=row.version,
            digest=row.digest_sha256,
            updated_at=_aware(row.updated_at),
            updated_by=row.updated_by,
        )

    async def set_label(
        self,
        name: str,
        selector: Selector,
        *,
        actor: str,
        expected_digest: str | None = None,
        create_only: bool = False,
        request_id: str = "",
    ) -> tuple[LabelInfo, str]:
        """Create or move a label (compare-and-set with ``expected_digest``).

        Retrying a move that already happened succeeds again: a label already pointing at
        the target is reported as it is.

        Returns:
            The label after the change and the version it pointed at before ('' if new).

        Raises:
            InvalidArgument: bad label name or selector.
            NotFound: the release does not exist.
            FailedPrecondition: the release is retired.
            Conflict: the label points elsewhere than ``expected_digest``.
            AlreadyExists: ``create_only`` and the label exists.
        """
        _check_request_id(request_id)
        _check_label(name, "label")
        set_once = functools.partial(
            self._set_label_once,
            name,
            selector,
            actor=actor,
            expected_digest=expected_digest,
            create_only=create_only,
            request_id=request_id,
        )
        try:
            result: tuple[LabelInfo, str] = await _LOST_CREATE_RACE.retrying(
                retry_on=_lost_create_race
            )(set_once)
        except IntegrityError:
            raise Conflict(f"label {name!r} was changed concurrently; retry") from None
        return result

    async def _set_label_once(
        self,
        name: str,
        selector: Selector,
        *,
        actor: str,
        expected_digest: str | None,
        create_only: bool,
        request_id: str,
    ) -> tuple[LabelInfo, str]:
        """One attempt of :meth:`set_label`, in one transaction.

        Raises:
            IntegrityError: a concurrent create of the same label won (retried: the next
                attempt sees it).
        """
        try:
            async with self._engine.begin() as conn:
                rid = await self._resolve(conn, selector, "release")
                target = await self._by_id(conn, rid)
                current = await self._label(conn, name)
                if current is not None and current.digest == target.digest:
                    return current, current.version
                if target.lifecycle is Lifecycle.RETIRED:
                    raise FailedPrecondition(
                        "RELEASE_RETIRED", f"release {target.version} is retired"
                    )
                if current is not None and create_only:
                    raise AlreadyExists(f"label {name!r} exists (at {current.version})")
                if expected_digest is not None and (
                    current is None or current.digest != expected_digest
                ):
                    where = "does not exist" if current is None else f"is at {current.version}"
                    raise Conflict(f"label {name!r} {where}, not at sha256:{expected_digest}")
                now = _now()
                if current is None:
                    await conn.execute(
                        LABELS.insert().values(
                            name=name, release_id=rid, updated_at=now, updated_by=actor
                        )
                    )
                else:
                    # Compare-and-set in the statement itself: a concurrent move between
                    # our read and this write makes it match no row.
                    moved = await conn.execute(
                        LABELS.update()
                        .where(
                            LABELS.c.name == name,
                            LABELS.c.release_id
                            == sa.select(RELEASES.c.release_id)
                            .where(RELEASES.c.digest_sha256 == current.digest)
                            .scalar_subquery(),
                        )
                        .values(release_id=rid, updated_at=now, updated_by=actor)
                    )
                    if moved.rowcount != 1:
                        raise Conflict(f"label {name!r} was moved concurrently; retry")
                await self._audit(
                    conn,
                    actor,
                    "label.set",
                    name,
                    version=target.version,
                    digest=target.digest,
                    previous=current.version if current else None,
                    request_id=request_id,
                )
                after = LabelInfo(name, target.version, target.digest, now, actor)
                return after, current.version if current else ""
        except IntegrityError:
            if create_only:
                raise AlreadyExists(f"label {name!r} exists") from None
            raise

    async def delete_label(
        self,
        name: str,
        *,
        actor: str,
        expected_digest: str | None = None,
        request_id: str = "",
    ) -> LabelInfo:
        """Remove a label (the release is unaffected).

        A retry with the same ``request_id`` returns the first answer.

        Raises:
            InvalidArgument: bad label name or request id.
            NotFound: no such label (on the first attempt).
            Conflict: the label points elsewhere than ``expected_digest``.
        """
        _check_request_id(request_id)
        _check_label(name, "label")
        async with self._engine.begin() as conn:
            if request_id:
                done = (
                    await conn.execute(
                        sa.select(REQUESTS.c.response).where(
                            REQUESTS.c.request_id == request_id,
                            REQUESTS.c.method == "DeleteLabel",
                        )
                    )
                ).scalar()
                if done is not None:
                    d = json.loads(bytes(done))
                    return LabelInfo(
                        d["name"],
                        d["version"],
                        d["digest"],
                        dt.datetime.fromisoformat(d["updated_at"]),
                        d["updated_by"],
                    )
            current = await self._label(conn, name)
            if current is None:
                raise NotFound("label", name)
            if expected_digest is not None and current.digest != expected_digest:
                raise Conflict(
                    f"label {name!r} is at {current.version}, not at sha256:{expected_digest}"
                )
            gone = await conn.execute(
                LABELS.delete().where(
                    LABELS.c.name == name,
                    LABELS.c.updated_at == current.updated_at,
                )
            )
            if gone.rowcount != 1:
                raise Conflict(f"label {name!r} was moved concurrently; retry")
            await self._audit(
                conn,
                actor,
                "label.delete",
                name,
                version=current.version,
                digest=current.digest,
                request_id=request_id,
            )
            if request_id:
                record = {
                    "name": current.name,
                    "version": current.version,
                    "digest": current.digest,
                    "updated_at": current.updated_at.isoformat(),
                    "updated_by": current.updated_by,
                }
                await conn.execute(
                    REQUESTS.insert().values(
                        request_id=request_id,
                        method="DeleteLabel",
                        response=json.dumps(record).encode(),
                        created_at=_now(),
                    )
                )
            return current

    async def set_lifecycle(
        self,
        version: str,
        state: Lifecycle,
        *,
        actor: str,
        reason: str = "",
        request_id: str = "",
    ) -> ReleaseInfo:
        """Move a release through its lifecycle; see ``SetLifecycle`` in registry.proto.

        Setting the state a release already has succeeds and changes nothing.

        Raises:
            InvalidArgument: bad version or request id.
            NotFound: no such release.
            FailedPrecondition: the release is retired, still labelled, or still in the field.
        """
        _check_request_id(request_id)
        parse_version(version)
        in_field = 0
        if state is Lifecycle.RETIRED and self._field_usage is not None:
            in_field = await self._field_usage(version)
        async with self._engine.begin() as conn:
            rid = await self._resolve(conn, Selector(version=version), "version")
            info = await self._by_id(conn, rid)
            if info.lifecycle is state:
                return info
            if info.lifecycle is Lifecycle.RETIRED:
                raise FailedPrecondition(
                    "RELEASE_RETIRED", f"release {version} is retired; retirement is final"
                )
            if state is Lifecycle.RETIRED:
                if info.labels:
                    raise FailedPrecondition(
                        "RELEASE_LABELLED",
                        f"release {version} is still labelled {', '.join(info.labels)}; "
                        "move or delete the labels first",
                    )
                if in_field:
                    raise FailedPrecondition(
                        "RELEASE_IN_FIELD", f"{in_field} edge(s) still report release {version}"
                    )
            now = _now()
            changed = await conn.execute(
                RELEASES.update()
                .where(
                    RELEASES.c.release_id == rid,
                    RELEASES.c.lifecycle == info.lifecycle.value,
                )
                .values(lifecycle=state.value, lifecycle_changed_at=now)
            )
            if changed.rowcount != 1:
                raise Conflict(f"release {version} changed state concurrently; retry")
            await self._audit(
                conn,
                actor,
                "lifecycle.set",
                version,
                previous=info.lifecycle.value,
                lifecycle=state.value,
                reason=reason,
                request_id=request_id,
            )
            return dataclasses.replace(info, lifecycle=state, lifecycle_changed_at=now)


class _Partial:
    """A row with some columns left out of the query, filled with stand-ins."""

    def __init__(self, row: Any, **defaults: Any) -> None:
        self._row = row
        self._defaults = defaults

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._row, name)
        except AttributeError:
            if name in self._defaults:
                return self._defaults[name]
            if name == "changes_json":
                return "{}"
            raise
