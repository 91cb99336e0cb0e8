"""What every part of the release store shares: its state, row reads, selectors, images.

:class:`_StoreCore` holds the engine, the push policy, the census hook and the cache of
indexed images; it reads releases (light rows, full infos, labels), resolves selectors,
and lays out the compatibility matrix of a candidate against a window of releases, which
both a push and a check need. The writers (:mod:`cloud.registry._pushes`,
:mod:`cloud.registry._labels`, :mod:`cloud.registry._lifecycle`) and the audit log build
on it; :class:`~cloud.registry.ReleaseStore` puts them together.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import semver
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import compat
from cloud.registry import _check
from cloud.registry._check import PushPolicy, Side
from cloud.registry._convert import digest_pb, release_pb
from cloud.registry._errors import InvalidArgument, NotFound
from cloud.registry._image import load_image
from cloud.registry._model import Lifecycle, ReleaseInfo, Selector
from cloud.registry._schema import LABELS, RELEASES
from hplus.cloud.v1 import registry_pb2

__all__ = ["FieldUsage", "parse_version"]

FieldUsage = Callable[[str], Awaitable[int]]
"""How many edges in the field still report a release (the field census hook)."""

_LABEL = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_CACHE = 16
_WINDOW_STATES = (Lifecycle.ACTIVE.value, Lifecycle.DEPRECATED.value)


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


class _StoreCore:
    """The release store's state and the reads its parts share (see the module)."""

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
